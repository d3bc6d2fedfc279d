"""Operating the fleet on the local AWS: a job followed to its end (WAIT), its SNS message, collect in three
formats, and `make status` over the deployed stack's real queue, group, bucket, metrics and logs."""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import sys
import time

import pytest

from agent_support import AgentProcess, fake_artifact, png
from runtime import registry
from runtime.caption_table import COLUMNS
from tools import collect, job_folder, status
from tools.local_aws import aws_client
from tools.paths import REPO
from tools.run_agent import laptop_agent_config

pytestmark = pytest.mark.e2e
PREFIX = "incoming/ops/"
SIZES = [(20 + i, 10 + i) for i in range(12)]  # one image per size: each fake caption names its size and colour


def colour(i: int) -> tuple[int, int, int]:
    return (10 * i, 200 - 10 * i, 7 * i)


@pytest.fixture(scope="module")
def ops(deployed_stack, tmp_path_factory):
    """The stack after a 13-image job (12 images, 1 bad file) submitted with --wait and run by a real agent."""
    target, outputs = deployed_stack
    tmp = tmp_path_factory.mktemp("ops")
    client = lambda service: aws_client(service, target.region, target.endpoint_url)  # noqa: E731
    s3, sqs, sns = client("s3"), client("sqs"), client("sns")
    pointer = registry.publish(
        s3, outputs["ArtifactsBucket"], fake_artifact(tmp, "fake-ops"), verify=False, model="fake-ops"
    )
    bucket = outputs["ImagesBucket"]
    for i, size in enumerate(SIZES):
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}shots/{i:02d}.png", Body=png(colour(i), size))
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}bad.png", Body=b"hello, I am text")
    inbox = sqs.create_queue(QueueName="job-done-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=outputs["JobTopicArn"], Protocol="sqs", Endpoint=inbox_arn)

    config = laptop_agent_config(target, "cpu")
    config.update(
        captioner_loader="agent_support:load_fake_captioner",
        cache_dir=str(tmp / "cache"),
        batch_size=4,
        batch_wait_s=0.2,
        wait_time_s=1,
        visibility_timeout_s=30,
        pointer_poll_s=0,
    )
    path = tmp / "agent.json"
    path.write_text(json.dumps(config))
    # the waiter sends the job, then follows it while the agent below runs it
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.submit",
            "--wait",
            "--poll",
            "0.3",
            "--timeout",
            "120",
            f"s3://{bucket}/{PREFIX}",
            "--job-id",
            "ops-job",
            "--config",
            str(path),
        ],
        cwd=REPO,
        env=target.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    agent = AgentProcess(path, "--burst", env=target.env())
    try:
        assert agent.wait(120) == 0, agent.lines[-10:]
        out, err = waiter.communicate(timeout=120)
    finally:
        agent.kill()
        waiter.kill()
    return {
        "target": target,
        "outputs": outputs,
        "s3": s3,
        "sqs": sqs,
        "inbox": inbox,
        "pointer": pointer,
        "wait": (waiter.returncode, out, err),
        "tmp": tmp,
        "agent": agent,
    }


def expected_captions(ops) -> dict[str, str]:
    bucket = ops["outputs"]["ImagesBucket"]
    return {
        f"s3://{bucket}/{PREFIX}shots/{i:02d}.png": f"fake-ops: a {w}x{h} image of colour {colour(i)}"
        for i, (w, h) in enumerate(SIZES)
    }


def test_submit_with_wait_draws_the_bar_and_exits_0_when_the_job_is_complete(ops):
    code, out, err = ops["wait"]
    assert code == 0, err
    submitted, finished = [json.loads(line) for line in out.strip().splitlines()]
    assert submitted["job_id"] == finished["job_id"] == "ops-job"
    assert (finished["done"], finished["failed"], finished["total"]) == (12, 1, 13)
    assert "job ops-job: 100%|" in err and "13/13" in err and "failed=1" in err  # the bar of `make status JOB=`


def test_status_job_reads_done_total_and_errors_and_exits_0_when_complete(ops, capsys):
    target, outputs = ops["target"], ops["outputs"]
    assert status.job(target, outputs, "ops-job", once=True, timeout_s=None) == 0
    printed = capsys.readouterr().out
    assert "job ops-job: 100%|" in printed and "13/13" in printed and "failed=1" in printed
    reader = job_folder.JobReader.for_job(ops["s3"], outputs["ResultsBucket"], outputs["ResultsPrefix"], "ops-job")
    state = job_folder.view(reader).read()  # one view for every kind of job
    assert (state.images_total, state.images_ok, state.images_errors, state.complete) == (13, 12, 1, True)
    assert status.job(target, outputs, "no-such-job", once=True, timeout_s=None) == 3
    assert "was not submitted to this stack" in capsys.readouterr().err


def test_a_finished_job_publishes_its_summary_location_once(ops):
    messages = ops["sqs"].receive_message(QueueUrl=ops["inbox"], MaxNumberOfMessages=10, WaitTimeSeconds=1)
    bodies = [json.loads(m["Body"]) for m in messages.get("Messages", [])]
    assert len(bodies) == 1, bodies
    message = json.loads(bodies[0]["Message"])
    outputs = ops["outputs"]
    assert message["summary"] == f"s3://{outputs['ResultsBucket']}/{outputs['ResultsPrefix']}_jobs/ops-job/summary.json"
    assert (message["done"], message["failed"], message["images"]) == (12, 1, 13)
    assert bodies[0]["Subject"] == "CaptionKit job ops-job done: 12 captioned, 1 failed"


@pytest.mark.parametrize("name", ["captions.jsonl", "captions.parquet", "captions.csv"])
def test_collect_writes_captions_and_errors_as_rows_of_one_table(ops, name):
    outputs, out = ops["outputs"], ops["tmp"] / name.rpartition(".")[2] / name
    bar = io.StringIO()
    report = collect.collect(
        ops["s3"],
        f"s3://{outputs['ImagesBucket']}/{PREFIX}",
        out,
        results_bucket=outputs["ResultsBucket"],
        results_prefix=outputs["ResultsPrefix"],
        stream=bar,
    )
    assert (report["rows"], report["captions"], report["errors"]) == (13, 12, 1)
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert tuple(table.column_names) == COLUMNS
        rows = table.to_pylist()
    elif name.endswith(".csv"):
        import csv

        with open(out, encoding="utf-8", newline="") as f:
            rows = [{k: v or None for k, v in r.items()} for r in csv.DictReader(f)]
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert all(tuple(r) == COLUMNS for r in rows)
    assert {r["uri"]: r["caption"] for r in rows if r["error"] is None} == expected_captions(ops)
    assert {(r["model"], r["model_sha256"]) for r in rows} == {("fake-ops", ops["pointer"]["sha256"])}
    errors = [r for r in rows if r["error"] is not None]
    assert [(e["uri"], e["key"], e["caption"]) for e in errors] == [
        (f"s3://{outputs['ImagesBucket']}/{PREFIX}bad.png", "bad.png", None)
    ]
    assert "not a readable image" in errors[0]["error"]
    assert not list(out.parent.glob("*.errors.jsonl"))  # no side file
    assert " 13" in bar.getvalue().splitlines()[-1]


def test_collect_of_a_job_reads_the_results_of_its_manifest(ops):
    outputs, out = ops["outputs"], ops["tmp"] / "job" / "ops-job.jsonl"
    report = collect.collect_job(
        ops["s3"],
        "ops-job",
        out,
        "jsonl",
        results_bucket=outputs["ResultsBucket"],
        results_prefix=outputs["ResultsPrefix"],
        stream=io.StringIO(),
    )
    assert (report["captions"], report["errors"]) == (12, 1)
    rows = list(map(json.loads, out.read_text().splitlines()))
    assert all(tuple(r) == COLUMNS for r in rows)
    assert {r["uri"]: r["caption"] for r in rows if r["error"] is None} == expected_captions(ops)
    assert [r["key"] for r in rows if r["error"]] == ["bad.png"]


def test_collect_imagefolder_writes_each_image_beside_metadata_jsonl(ops):
    outputs, out = ops["outputs"], ops["tmp"] / "dataset"
    report = collect.collect(
        ops["s3"],
        f"s3://{outputs['ImagesBucket']}/{PREFIX}",
        out,
        "imagefolder",
        results_bucket=outputs["ResultsBucket"],
        results_prefix=outputs["ResultsPrefix"],
        stream=io.StringIO(),
    )
    assert (report["captions"], report["errors"]) == (12, 1)
    metadata = [json.loads(line) for line in (out / "train" / "metadata.jsonl").read_text().splitlines()]
    files = sorted(p.relative_to(out / "train").as_posix() for p in (out / "train").rglob("*") if p.is_file())
    assert files == sorted([m["file_name"] for m in metadata] + ["metadata.jsonl"])  # nothing more, nothing less
    expected = expected_captions(ops)
    for row in metadata:  # file by file: the bytes are the source image's, the text is its caption
        source = f"s3://{outputs['ImagesBucket']}/{PREFIX}{row['file_name']}"
        body = ops["s3"].get_object(Bucket=outputs["ImagesBucket"], Key=f"{PREFIX}{row['file_name']}")["Body"].read()
        assert (out / "train" / row["file_name"]).read_bytes() == body, row
        assert row["text"] == expected[source] and row["uri"] == source
    assert len(metadata) == len(expected)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["uri"] for e in errors] == [f"s3://{outputs['ImagesBucket']}/{PREFIX}bad.png"]


def test_status_shows_queue_fleet_model_last_hour_errors_and_cost(ops):
    target, outputs = ops["target"], ops["outputs"]
    client = lambda service: aws_client(service, target.region, target.endpoint_url)  # noqa: E731
    sqs, now = ops["sqs"], datetime.datetime.now(datetime.UTC)
    for i in range(3):
        sqs.send_message(QueueUrl=outputs["QueueUrl"], MessageBody=json.dumps({"waiting": i}))
    sqs.send_message(QueueUrl=outputs["DeadLetterQueueUrl"], MessageBody="{}")
    # What CloudWatch would hold on AWS but moto does not make: the agent's EMF metrics (moto extracts none
    # from log lines), the group metrics (moto emits none) and the shipped agent log (the CloudWatch agent).
    cloudwatch, queue = client("cloudwatch"), outputs["QueueUrl"].rsplit("/", 1)[-1]
    for i in range(12):  # one instance up for the last hour; images done in half of its 5-minute periods
        # one point per period, all inside the status screen's last hour whatever the clock reads (a point
        # aligned to the current 5-minute bucket could lie after `now` in the bucket's first seconds)
        at = now - datetime.timedelta(minutes=5 * i, seconds=60)
        metric = lambda ns, name, dims, value: cloudwatch.put_metric_data(  # noqa: E731
            Namespace=ns,
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                    "Timestamp": at,
                    "Value": value,
                }
            ],
        )
        metric("AWS/AutoScaling", "GroupTotalInstances", {"AutoScalingGroupName": outputs["GroupName"]}, 1.0)
        if i % 2:
            metric("CaptionKit", "ImagesDone", {"Queue": queue}, 50.0)
            metric("CaptionKit", "ImageErrors", {"Queue": queue}, 1.0)
    logs = client("logs")
    logs.create_log_stream(logGroupName=outputs["LogGroup"], logStreamName="i-0abc/agent")
    logs.put_log_events(
        logGroupName=outputs["LogGroup"],
        logStreamName="i-0abc/agent",
        logEvents=[
            {
                "timestamp": int(time.time() * 1000),
                "message": json.dumps(
                    {
                        "event": "image_failed",
                        "uri": f"s3://{outputs['ImagesBucket']}/{PREFIX}bad.png",
                        "reason": "not a readable image",
                    }
                ),
            },
            {"timestamp": int(time.time() * 1000) + 1, "message": json.dumps({"event": "batch", "images": 4})},
        ],
    )
    client("autoscaling").set_desired_capacity(AutoScalingGroupName=outputs["GroupName"], DesiredCapacity=1)
    try:
        snap = status.snapshot(target, outputs, {"g5.xlarge": 2.0})
    finally:
        client("autoscaling").set_desired_capacity(AutoScalingGroupName=outputs["GroupName"], DesiredCapacity=0)
    assert snap["queue"]["waiting"] >= 3 and snap["dead_letters"] == 1
    assert (snap["fleet"]["desired"], snap["fleet"]["in_service"], snap["fleet"]["max"]) == (1, 1, 2)
    assert snap["fleet"]["configured_types"] == ["g5.xlarge"]
    assert snap["model"] == {
        "name": "fake-ops",
        "sha256": ops["pointer"]["sha256"],
        "published": ops["pointer"]["uploaded_at"],
    }
    activity = snap["activity"]
    assert (activity["done_hour"], activity["failed_hour"]) == (300, 6)
    cost = activity["cost"]
    assert (cost["instance_hours"], cost["idle_hours"], cost["images"]) == (1.0, 0.5, 300)
    assert (cost["cost"], cost["idle_cost"], cost["per_1000"]) == (2.0, 1.0, round(2.0 / 300 * 1000, 4))
    assert [(e["uri"], e["reason"]) for e in snap["errors"]] == [
        (f"s3://{outputs['ImagesBucket']}/{PREFIX}bad.png", "not a readable image")
    ]
    screen = status.render(snap)
    assert len(screen.splitlines()) <= 24  # one screen, no scrolling
    for text in (
        "dead letters 1",
        "desired 1 (min 0, max 2)",
        "fake-ops",
        "300 done, 6 failed, 5.1 images/min",
        "$2.00, $6.67 per 1,000 images; idle $1.00 (0.5 h)",
        "bad.png: not a readable image",
    ):
        assert text in screen, (text, screen)
