"""The pieces of status, collect and job notification, small and fast: bar, rate, cost, prices, layout, SNS."""

from __future__ import annotations

import datetime
import io
import json
import re

import pytest

from agent_support import png
from runtime.agent import ledger, notice, submit
from runtime.caption_table import OutputRefused
from stacks.prices import INSTANCE_PRICES
from stacks.settings import Settings, SettingsError
from tools import collect, cost
from tools.collect_formats import ImageFolder, check_output
from tools.progress import Follow, duration, line

T0 = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


def test_the_bar_shows_finished_over_total_failures_rate_and_eta():
    shown = line(40, 100, failed=10, rate=2.0, label="job j")
    assert shown.startswith("job j:  50%|") and "50/100 [00:25<00:25,  2.00img/s, failed=10]" in shown
    assert "100/100" in line(100, 100, rate=5.0) and "<00:00" in line(100, 100, rate=5.0)
    assert line(7, None, failed=1).startswith("8img ")  # collect: no total while streaming
    assert "0/10" in line(0, 10, rate=0.0) and "<?" in line(0, 10, rate=0.0)


def test_a_followed_bar_ends_on_the_final_count_and_measures_only_what_it_saw_move():
    stream = io.StringIO()
    follow = Follow("job j", stream)
    assert "4/10" in follow.show(3, 1, 10)  # joined halfway: 4 already finished before the bar existed
    assert follow.bar.n == 4 and follow.bar.initial == 4
    follow.show(9, 1, 10)
    follow.close()
    assert "10/10" in stream.getvalue().splitlines()[-1] and "failed=1" in stream.getvalue().splitlines()[-1]


@pytest.mark.parametrize("seconds, text", [(42, "42s"), (185, "3m05s"), (7620, "2h07m")])
def test_durations_are_short(seconds, text):
    assert duration(seconds) == text


def test_cost_counts_instance_hours_idle_periods_and_cost_per_thousand():
    instances = {T0 + datetime.timedelta(minutes=5 * i): 2.0 for i in range(6)}  # 2 instances for 30 min
    done = {T0: 100.0, T0 + datetime.timedelta(minutes=5): 100.0, T0 + datetime.timedelta(minutes=10): 0.0}
    report = cost.fleet_cost(instances, done, 300, 1.5)
    assert (report["instance_hours"], report["idle_hours"], report["images"]) == (1.0, 0.667, 200)
    assert (report["cost"], report["idle_cost"], report["per_1000"]) == (1.5, 1.0, 7.5)
    assert cost.fleet_cost(instances, {}, 300, None)["per_1000"] is None


def test_a_missing_price_says_where_to_add_it():
    price, source = cost.hourly_price(["g5.xlarge", "p5.48xlarge"], INSTANCE_PRICES)
    assert price is None and "no price for p5.48xlarge: add it to instance_prices in cdk.json" in source
    price, source = cost.hourly_price(["g5.xlarge"], INSTANCE_PRICES)
    assert price == 1.006 and "read 20" in source
    assert "to be checked" in cost.hourly_price(["g6e.xlarge"], INSTANCE_PRICES)[1]


def test_instance_prices_override_entries_of_the_table_from_the_command_line():
    settings = Settings.from_mapping({"instance_prices": "g5.xlarge=0.5, p5.48xlarge=55.04"})
    assert settings.instance_prices == {**INSTANCE_PRICES, "g5.xlarge": 0.5, "p5.48xlarge": 55.04}
    with pytest.raises(SettingsError, match="expected type=price pairs"):
        Settings.from_mapping({"instance_prices": "g5.xlarge"})
    with pytest.raises(SettingsError, match="expected positive hourly prices"):
        Settings.from_mapping({"instance_prices": {"g5.xlarge": -1}})


def test_collect_reads_results_for_an_images_prefix_or_a_results_prefix():
    assert collect.results_location("s3://img/incoming/2026/", "res", "results/") == (
        "res",
        "results/incoming/2026/",
        "incoming/2026/",
    )
    assert collect.results_location("s3://res/results/incoming/", "res", "results/") == (
        "res",
        "results/incoming/",
        "incoming/",
    )


@pytest.mark.parametrize(
    "out, fmt, refusal",
    [
        ("captions.csv", None, None),
        ("captions.parquet", None, None),
        ("captions.jsonl", "jsonl", None),
        ("captions.txt", None, "unknown output type '.txt'"),
        ("captions", None, "unknown output type '(no extension)'"),
        ("captions.csv", "jsonl", "the extension decides the format"),
        ("old.jsonl", None, "exists"),
    ],
)
def test_collect_output_is_chosen_by_extension_and_never_replaces_an_earlier_file(tmp_path, out, fmt, refusal):
    (tmp_path / "old.jsonl").write_text("earlier\n")
    if refusal is None:
        check_output(tmp_path / out, fmt)
    else:
        with pytest.raises(OutputRefused, match=re.escape(refusal)):
            check_output(tmp_path / out, fmt)
    check_output(tmp_path / "old.jsonl", None, overwrite=True)


def test_imagefolder_refuses_paths_that_would_leave_its_folder(tmp_path):
    folder = ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="cannot be stored"):
        folder.caption(
            {
                "key": "../escape.png",
                "uri": "s3://b/k",
                "caption": "x",
                "error": None,
                "model": "m",
                "model_sha256": "s",
            },
            b"data",
        )
    folder.close()


def test_the_job_done_message_names_the_summary_and_the_counts():
    summary = {"job_id": "j1", "images": 3, "done": 2, "failed": 1, "results": "s3://b/results/x/"}
    subject, body = notice.job_done_message(summary, "s3://b/results/_jobs/j1/summary.json")
    assert subject == "CaptionKit job j1 done: 2 captioned, 1 failed"
    assert json.loads(body) == {
        "job_id": "j1",
        "summary": "s3://b/results/_jobs/j1/summary.json",
        "images": 3,
        "done": 2,
        "failed": 1,
        "results": "s3://b/results/x/",
        "collect": "make collect JOB=j1 OUT=j1.jsonl",
    }


def test_a_failed_publish_is_logged_and_does_not_fail_the_job(agent_log):
    class Broken:
        def publish(self, **_):
            raise RuntimeError("throttled")

    summary = {"job_id": "j2", "images": 0, "done": 0, "failed": 0, "results": "s3://b/r/"}
    assert notice.publish_job_done("arn:aws:sns:us-east-1:1:t", "us-east-1", summary, "s3://b/s", sns=Broken()) is False
    [line_] = agent_log.events("job_notify_failed")
    assert line_["job_id"] == "j2" and "throttled" in line_["reason"]


def test_the_summary_is_published_once_not_on_replays(stack):
    from runtime import aws

    sns, sqs = aws.client("sns"), stack.sqs
    topic = sns.create_topic(Name=f"jobs-done-{stack.id}")["TopicArn"]
    inbox = sqs.create_queue(QueueName=f"inbox-{stack.id}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    stack.put("incoming/once/a.png", png())
    config = stack.config(job_topic_arn=topic)
    stack.send(submit.build_job([f"s3://{stack.images}/incoming/once/"], "job-once", run="20260101-000000-once"))
    assert stack.worker(config, burst=True).run() == 0
    manifest = json.loads(
        stack.s3.get_object(Bucket=stack.images, Key="results/_jobs/job-once/manifest.json")["Body"].read()
    )
    queued = json.loads(
        stack.s3.get_object(Bucket=stack.images, Key="results/_jobs/job-once/runs/20260101-000000-once/queued.json")[
            "Body"
        ].read()
    )
    assert ledger.write_summary(stack.s3, config, "job-once", manifest, queued)["done"] == 1  # the last part replayed
    bodies = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert [json.loads(json.loads(m["Body"])["Message"])["job_id"] for m in bodies] == ["job-once"]


@pytest.mark.parametrize(
    "desired, pending, in_service, waiting, note",
    [
        (1, 1, 0, 5, "scaling from zero: 1 launching"),
        (0, 0, 0, 5, "scaling from zero: messages wait and no instance is wanted yet"),
        (0, 0, 0, 0, "idle at zero"),
        (2, 0, 2, 9, "serving with 2 instance(s)"),
    ],
)
def test_status_says_whether_the_fleet_is_scaling_from_zero(desired, pending, in_service, waiting, note):
    from tools.status import scaling_note

    snap = {
        "fleet": {"desired": desired, "pending": pending, "in_service": in_service},
        "queue": {"waiting": waiting, "delayed": 0},
    }
    assert scaling_note(snap).startswith(note)


def test_local_up_refuses_an_unknown_or_invalid_setting_before_starting_anything():
    from tools.local import check_settings

    assert check_settings(["dataset_sources=s3://shards/laion/", "batch_size=4"]) == {
        "dataset_sources": "s3://shards/laion/",
        "batch_size": "4",
    }
    with pytest.raises(SettingsError, match="dataset_source=s3://x/.*dataset_sources"):
        check_settings(["dataset_source=s3://x/"])
    with pytest.raises(SettingsError, match="dataset_sources"):
        check_settings(["dataset_sources=s3://x"])


def test_tables_are_plain_aligned_text_off_a_terminal():
    from tools.tables import fields, table

    text = table(("image", "caption", ""), [("a.png", "café rouge", "ok"), ("long-name.png", None, "MISS")], tty=False)
    lines = text.splitlines()
    assert "\x1b[" not in text and lines[0].split() == ["image", "caption"]
    assert lines[2].index("café rouge") == lines[0].index("caption") and lines[3].endswith("MISS")
    assert fields([("queue", "3 waiting"), ("dead letters", "1")], tty=False).splitlines() == [
        "queue        3 waiting",
        "dead letters 1",
    ]


def test_a_job_expanded_before_the_one_job_engine_still_reads_in_status_and_collect(stack, tmp_path):
    """Its manifest lists its images and its chunk markers count them; no agent writes that shape any more."""
    from runtime.agent import results
    from tools import job_folder

    config, root = stack.config(), "results/_jobs/old-job/"
    images = [f"s3://{stack.images}/incoming/old/{n}.png" for n in range(3)]
    manifest = {"job_id": "old-job", "source": "3 listed images", "images": images, "chunk_size": 2, "chunks": 2}
    manifest["created_at"] = "2026-11-01T00:00:00+00:00"
    stack.s3.put_object(Bucket=stack.images, Key=root + "manifest.json", Body=json.dumps(manifest).encode())
    failed = [{"uri": images[2], "error": "not a readable image"}]
    for index, marker in enumerate([{"index": 0, "done": 2, "failed": []}, {"index": 1, "done": 0, "failed": failed}]):
        stack.s3.put_object(Bucket=stack.images, Key=f"{root}chunks/{index:06d}.json", Body=json.dumps(marker).encode())
    stack.s3.put_object(Bucket=stack.images, Key=root + "summary.json", Body=b"{}")
    model = type("Model", (), {"name": "old", "sha256": "ab" * 32})()
    for n, uri in enumerate(images):
        caption, error = (None, "not a readable image") if n == 2 else (f"caption {n}", None)
        body = results.render_source(stack.images, uri.split("/", 3)[3], {}, caption, error, model)
        stack.s3.put_object(Bucket=stack.images, Key=f"results/incoming/old/{n}.png.json", Body=body)

    reader = job_folder.JobReader.for_job(stack.s3, stack.images, config.results_prefix, "old-job")
    state = job_folder.view(reader).read()
    assert (state.total, state.done, state.failed, state.complete) == (3, 2, 1, True)
    report = collect.collect_job(
        stack.s3, "old-job", tmp_path / "old.jsonl", results_bucket=stack.images, results_prefix="results/"
    )
    assert (report["rows"], report["captions"], report["errors"]) == (3, 2, 1)
