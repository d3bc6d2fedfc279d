"""`runtime submit` checks a dataset job (shards, a manifest, a retry) before it queues it."""

from __future__ import annotations

import json
import re

import pytest
from plan_support import put_shards

from runtime.agent import ledger
from runtime.agent.layout import job_root
from runtime.agent.messages import parse_body
from runtime.agent.scope import Scope


def _submit(stack, monkeypatch, *argv) -> int:
    from runtime.agent import submit

    monkeypatch.setenv("CAPTIONKIT_QUEUE_URL", stack.queue)
    monkeypatch.setenv("CAPTIONKIT_IMAGES_BUCKET", stack.images)
    return submit.main(list(argv))


def test_submit_shards_checks_then_queues_a_job_whose_id_follows_the_source(stack, monkeypatch, capsys):
    put_shards(stack, 2, "incoming/laion part-1/")
    source = f"s3://{stack.images}/incoming/laion part-1"
    assert _submit(stack, monkeypatch, "--shards", source) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["checked"]["shards"] == 2 and printed["checked"]["formats"] == {"tar": 2}
    assert printed["job_id"].startswith("laion-part-1-") and len(printed["job_id"]) == len("laion-part-1-") + 10
    (body,) = [
        json.loads(m["Body"])
        for m in stack.sqs.receive_message(QueueUrl=stack.queue, MaxNumberOfMessages=10).get("Messages", [])
    ]
    assert body == {
        "type": "captionkit.job",
        "job_id": printed["job_id"],
        "run": printed["run"],
        "shards": source + "/",
    }
    assert parse_body(json.dumps(body), Scope.of(stack.config())).job["kind"] == "shards"
    assert _submit(stack, monkeypatch, "--shards", source + "/") == 0  # the same source: the same job, a new run
    again = json.loads(capsys.readouterr().out)
    assert again["job_id"] == printed["job_id"] and again["run"] != printed["run"]


@pytest.mark.parametrize(
    "argv, why",
    [
        (["--shards", "s3://{images}/incoming/empty/"], "no .tar or .parquet shards"),
        (["--shards", "s3://{images}/elsewhere/"], "outside the images prefix"),
        (["--manifest", "s3://{images}/incoming/bad.txt"], "bad.txt line 2: .*elsewhere/b.png is outside"),
        (["--retry", "no-such-job"], "job no-such-job is not a job of this fleet"),
    ],
)
def test_submit_refuses_a_dataset_job_that_cannot_work_and_queues_nothing(stack, monkeypatch, capsys, argv, why):
    stack.put("incoming/bad.txt", b"incoming/a.png\nelsewhere/b.png\n")
    assert _submit(stack, monkeypatch, *[arg.format(images=stack.images) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("submit: refused, nothing queued: ") and re.search(why, err)
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def test_submit_manifest_and_retry(stack, monkeypatch, capsys):
    stack.put("incoming/keys.txt", b"incoming/a.png\nincoming/b.png\n")
    assert _submit(stack, monkeypatch, "--manifest", f"s3://{stack.images}/incoming/keys.txt", "--job-id", "k1") == 0
    assert json.loads(capsys.readouterr().out)["checked"]["images"] == 2
    config = stack.config()
    ledger.put_json(stack.s3, stack.images, job_root(config, "k1") + "manifest.json", {"shards": [{}, {}]})
    assert _submit(stack, monkeypatch, "--retry", "k1", "--only", "both") == 0
    bodies = [
        json.loads(m["Body"])
        for m in stack.sqs.receive_message(QueueUrl=stack.queue, MaxNumberOfMessages=10).get("Messages", [])
    ]
    assert sorted(body.get("retry") or body.get("manifest") for body in bodies) == [
        "both",
        f"s3://{stack.images}/incoming/keys.txt",
    ]
    assert _submit(stack, monkeypatch, "--retry", "k1", "--image-column", "jpg") == 2
    assert _submit(stack, monkeypatch, "--shards", f"s3://{stack.images}/incoming/", f"s3://{stack.images}/x") == 2
