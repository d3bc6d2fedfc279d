"""The books of a dataset job on moto: markers, done/ listed by groups, the summary once complete, one SNS notice."""

from __future__ import annotations

import json
import types

from agent_support import race_at_group_listing
from runtime import aws
from runtime.agent import ledger, tally
from runtime.agent.layout import GROUPS, RUN_DONE, RUN_QUEUED, job_root, run_root
from runtime.agent.work import ShardRef

MODEL = types.SimpleNamespace(name="fake-a", sha256="a" * 64)


class FakeSNS:
    def __init__(self):
        self.published = []

    def publish(self, **message):
        self.published.append(message)


def _job(stack, config, job_id="job-1", shards=3, run="run-1", indexes=None) -> dict:
    bucket, root = config.results_bucket_name, job_root(config, job_id)
    manifest = {
        "job_id": job_id,
        "kind": "shards",
        "source": f"s3://{stack.images}/incoming/set/",
        "created_at": "2025-01-01T00:00:00+00:00",
        "chunks": shards,
        "image_column": None,
        "key_column": None,
        "images": None,
        "shards": [
            {"uri": f"s3://{stack.images}/incoming/set/{n}.tar", "format": "tar", "size": 1024} for n in range(shards)
        ],
    }
    ledger.put_json(stack.s3, bucket, root + "manifest.json", manifest)
    queued = {
        "run": run,
        "created_at": "2025-01-01T00:00:00+00:00",
        "reason": "submit",
        "indexes": list(range(shards)) if indexes is None else indexes,
    }
    ledger.put_json(stack.s3, bucket, run_root(root, run) + RUN_QUEUED, queued)
    return manifest


def _marker(index, run="run-1", status="done", samples=10, errors=0, error=None, seconds=10) -> dict:
    return {
        "index": index,
        "shard": f"s3://x/{index}.tar",
        "run": run,
        "status": status,
        "samples": samples,
        "ok": samples - errors if status == "done" else 0,
        "errors": errors,
        "error": error,
        "model": "fake-a",
        "model_sha256": MODEL.sha256,
        "settings": "f" * 16,
        "output": None,
        "started_at": "2025-01-01T00:00:00+00:00",
        "finished_at": f"2025-01-01T00:00:{seconds:02d}+00:00",
        "seconds": 1.0,
    }


def test_the_settings_fingerprint_follows_model_prompt_and_generation_settings(stack):
    config = stack.config()
    first = ledger.settings_fingerprint(MODEL, config)
    assert len(first) == 16 and first == ledger.settings_fingerprint(MODEL, stack.config())
    assert ledger.settings_fingerprint(types.SimpleNamespace(sha256="b" * 64), config) != first
    assert ledger.settings_fingerprint(types.SimpleNamespace(sha256="a" * 64, prompt_sha256="p"), config) != first
    assert ledger.settings_fingerprint(MODEL, stack.config(max_pixels=1000)) != first
    assert ledger.settings_fingerprint(MODEL, stack.config(batch_size=2)) == first  # not a generation setting


def test_the_summary_is_written_when_the_last_shard_of_the_run_finishes_and_sns_is_told_once(stack):
    config, sns = stack.config(job_topic_arn="arn:aws:sns:us-east-1:123456789012:jobs"), FakeSNS()
    _job(stack, config)
    root = job_root(config, "job-1")
    assert ledger.finish_shard(stack.s3, config, ShardRef("job-1", 0, 3, "run-1"), _marker(0), sns=sns) is None
    assert (
        ledger.finish_shard(
            stack.s3,
            config,
            ShardRef("job-1", 2, 3, "run-1"),
            _marker(2, status="failed", samples=0, error="not a tar file"),
            sns=sns,
        )
        is None
    )
    assert root + "summary.json" not in stack.keys(root) and sns.published == []

    summary = ledger.finish_shard(
        stack.s3, config, ShardRef("job-1", 1, 3, "run-1"), _marker(1, errors=2, seconds=20), sns=sns
    )
    written = stack.s3.get_object(Bucket=stack.images, Key=root + "summary.json")["Body"].read()
    assert json.loads(written) == summary
    assert {
        k: summary[k]
        for k in (
            "shards",
            "shards_done",
            "shards_failed",
            "images",
            "done",
            "failed",
            "errors",
            "error_shards",
            "seconds",
            "images_per_s",
        )
    } == {
        "shards": 3,
        "shards_done": 2,
        "shards_failed": 1,
        "images": 20,
        "done": 18,
        "failed": 2,
        "errors": 2,
        "error_shards": [1],
        "seconds": 20.0,
        "images_per_s": 1.0,
    }
    assert summary["failures"] == [{"shard": "s3://x/2.tar", "index": 2, "error": "not a tar file"}]
    assert summary["results"] == f"s3://{stack.images}/{root}shards/"
    assert summary["collect"] == "make collect JOB=job-1 OUT=job-1.parquet"
    assert len(sns.published) == 1 and "18 captioned, 2 failed" in sns.published[0]["Subject"]

    again = ledger.finish_shard(
        stack.s3, config, ShardRef("job-1", 1, 3, "run-1"), _marker(1, errors=2, seconds=20), sns=sns
    )  # a redelivered last shard
    assert again == summary and len(sns.published) == 1
    assert stack.s3.get_object(Bucket=stack.images, Key=root + "summary.json")["Body"].read() == written
    assert len(stack.keys(run_root(root, "run-1") + "done/")) == 3


def _listings(s3) -> list[dict]:
    """Every ListObjectsV2 that `s3` sends from now on, as its reply (Prefix, StartAfter, MaxKeys, KeyCount)."""
    seen = []
    s3.meta.events.register("after-call.s3.ListObjectsV2", lambda parsed, **_: seen.append(parsed))
    return seen


def test_a_run_of_several_groups_completes_with_its_last_shard_listing_one_group_per_shard(stack, monkeypatch):
    monkeypatch.setattr(tally, "GROUP", 3)
    config, sns, s3 = stack.config(job_topic_arn="arn:aws:sns:us-east-1:123456789012:jobs"), FakeSNS(), aws.client("s3")
    queued = [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]  # a retry's subset: group 1 lacks 3, group 3 is 9 and 10
    _job(stack, config, shards=11, indexes=queued)
    root, run = job_root(config, "job-1"), run_root(job_root(config, "job-1"), "run-1")
    listed, order = _listings(s3), [9, 0, 4, 1, 7, 10, 5, 8, 2]
    for index in order:
        assert ledger.finish_shard(s3, config, ShardRef("job-1", index, 11, "run-1"), _marker(index), sns=sns) is None
    assert stack.keys(run + GROUPS) == [f"{run}{GROUPS}{g:06d}" for g in (0, 1, 3)]  # group 2 still lacks 6

    summary = ledger.finish_shard(s3, config, ShardRef("job-1", 6, 11, "run-1"), _marker(6), sns=sns)
    assert summary is not None and summary["shards_done"] == 10 and len(sns.published) == 1
    assert json.loads(stack.s3.get_object(Bucket=stack.images, Key=root + "summary.json")["Body"].read()) == summary
    done = [reply for reply in listed if reply["Prefix"] == run + RUN_DONE]
    assert len(done) == len(order) + 1  # one listing of done/ per shard, of its group alone, never the folder
    assert all(reply["MaxKeys"] == 3 and reply["KeyCount"] <= 3 for reply in done)
    assert len([reply for reply in listed if reply["Prefix"] == run + GROUPS]) == 4  # once per group made whole


def test_two_agents_finishing_the_last_shards_of_two_groups_at_once_both_see_the_run_complete(stack, monkeypatch):
    monkeypatch.setattr(tally, "GROUP", 2)
    config, sns = stack.config(job_topic_arn="arn:aws:sns:us-east-1:123456789012:jobs"), FakeSNS()
    _job(stack, config, shards=4)
    run = run_root(job_root(config, "job-1"), "run-1")
    for index in (0, 2):
        ledger.finish_shard(stack.s3, config, ShardRef("job-1", index, 4, "run-1"), _marker(index), sns=sns)
    # both have written their group's object before either lists the groups; then one goes on, then the other
    results = race_at_group_listing(
        run + GROUPS,
        lambda s3, index: ledger.finish_shard(
            s3, config, ShardRef("job-1", index, 4, "run-1"), _marker(index), sns=sns
        ),
    )
    assert results[1] is not None and results[1] == results[3]  # the summary written twice, the same bytes
    assert results[1]["shards_done"] == 4 and len(sns.published) == 1  # told once: runs/<run>/notified
    assert stack.keys(run + GROUPS) == [f"{run}{GROUPS}{g:06d}" for g in (0, 1)]


def test_the_notice_goes_through_sns_once_per_run(stack):
    sns, sqs = aws.client("sns"), stack.sqs
    topic = sns.create_topic(Name=f"jobs-{stack.id}")["TopicArn"]
    inbox = sqs.create_queue(QueueName=f"notices-{stack.id}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    config = stack.config(job_topic_arn=topic, region="us-east-1")
    _job(stack, config, shards=1)
    for _ in range(2):  # the last shard twice, as after a redelivery
        ledger.finish_shard(stack.s3, config, ShardRef("job-1", 0, 1, "run-1"), _marker(0))
    received = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert len(received) == 1
    assert json.loads(json.loads(received[0]["Body"])["Message"])["done"] == 10


def test_an_index_its_run_did_not_queue_gets_a_marker_only(stack):
    config = stack.config()
    _job(stack, config, shards=3, indexes=[2])
    root = job_root(config, "job-1")
    assert ledger.finish_shard(stack.s3, config, ShardRef("job-1", 0, 3, "run-1"), _marker(0)) is None
    assert ledger.finish_shard(stack.s3, config, ShardRef("job-1", 0, 3, "run-9"), _marker(0, run="run-9")) is None
    assert stack.keys(run_root(root, "run-1") + "done/") == [] and stack.keys(root + "runs/run-9/") == []
    assert ledger.markers(stack.s3, config, "job-1", {"shards": [{}] * 3})[0]["run"] == "run-9"


def test_markers_are_none_where_a_shard_has_none_and_start_marks_it_in_flight(stack):
    config = stack.config()
    manifest = _job(stack, config, shards=3)
    ledger.put_json(stack.s3, stack.images, job_root(config, "job-1") + "chunks/000001.json", _marker(1))
    assert [m and m["index"] for m in ledger.markers(stack.s3, config, "job-1", manifest)] == [None, 1, None]
    ledger.start_shard(stack.s3, config, ShardRef("job-1", 2, 3, "run-1"), "i-123/0")
    started = json.loads(
        stack.s3.get_object(Bucket=stack.images, Key=job_root(config, "job-1") + "started/000002.json")["Body"].read()
    )
    assert (started["index"], started["run"], started["agent"]) == (2, "run-1", "i-123/0")


def test_a_dataset_jobs_notice_carries_its_shard_counts_and_its_parquet_collect():
    from runtime.agent import notice

    summary = {
        "job_id": "wds-1",
        "run": "r2",
        "images": 300,
        "done": 296,
        "failed": 4,
        "errors": 4,
        "shards": 3,
        "shards_done": 2,
        "shards_failed": 1,
        "images_per_s": 12.5,
        "results": "s3://b/results/_jobs/wds-1/shards/",
        "collect": "make collect JOB=wds-1 OUT=wds-1.parquet",
    }
    subject, body = notice.job_done_message(summary, "s3://b/results/_jobs/wds-1/summary.json")
    sent = json.loads(body)
    assert subject == "CaptionKit job wds-1 done: 296 captioned, 4 failed, 1 of 3 shards failed"
    assert {k: sent[k] for k in ("run", "shards", "shards_done", "shards_failed", "errors", "collect")} == {
        "run": "r2",
        "shards": 3,
        "shards_done": 2,
        "shards_failed": 1,
        "errors": 4,
        "collect": "make collect JOB=wds-1 OUT=wds-1.parquet",
    }


def test_an_older_run_finishing_late_never_replaces_a_newer_runs_summary(stack):
    config = stack.config()
    _job(stack, config, job_id="job-9", shards=2, run="20250101-000000-aaaaaa")
    _job(stack, config, job_id="job-9", shards=2, run="20250102-000000-bbbbbb", indexes=[0])
    root = job_root(config, "job-9")
    old, new = "20250101-000000-aaaaaa", "20250102-000000-bbbbbb"
    assert ledger.finish_shard(stack.s3, config, ShardRef("job-9", 1, 2, old), _marker(1, run=old)) is None
    assert ledger.finish_shard(stack.s3, config, ShardRef("job-9", 0, 2, new), _marker(0, run=new))["run"] == new
    late = ledger.finish_shard(stack.s3, config, ShardRef("job-9", 0, 2, old), _marker(0, run=old))
    assert late["run"] == old  # the old run is finished now, and says so
    assert ledger.get_json(stack.s3, stack.images, root + "summary.json")["run"] == new
    assert ledger.finished(stack.s3, config, ShardRef("job-9", 0, 2, old)) and ledger.finished(
        stack.s3, config, ShardRef("job-9", 0, 2, new)
    )
