"""What the agent does with a message it accepted: the job files a part needs (read through the ledger, kept
while unchanged), and a message whose handling fails (its parse raising, the dead-letter queue unreachable) stays
that message's failure alone."""

from __future__ import annotations

import io
import json

import botocore.exceptions
import pytest

from runtime.agent import ledger
from runtime.agent.config import AgentConfig
from runtime.agent.messages import UnknownMessage
from runtime.aws import RetryLater


def _upload(key: str) -> str:
    """An S3 upload event's body for one key of the images bucket."""
    return json.dumps(
        {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "pics"}, "object": {"key": key}}}]}
    )


def _client_error(code: str):
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": code}}, "GetObject")


class _S3:
    """`get_object` over a dict of keys (bytes) with If-None-Match, raising S3's error codes for the rest."""

    def __init__(self, objects: dict[str, bytes], code: str = "NoSuchKey"):
        self.objects, self.code, self.bodies_sent = dict(objects), code, 0

    def get_object(self, Bucket, Key, IfNoneMatch=None):
        if Key not in self.objects:
            raise _client_error(self.code)
        etag = f'"{hash(self.objects[Key])}"'
        if IfNoneMatch == etag:
            raise _client_error("304")
        self.bodies_sent += 1
        return {"Body": io.BytesIO(self.objects[Key]), "ETag": etag}


CONFIG = AgentConfig(queue_url="q", images_bucket="pics")
PARTS = [{"uri": f"s3://pics/results/_jobs/job-1/parts/{n:06d}.json", "format": "keys", "size": 2} for n in range(3)]
MANIFEST = {
    "results/_jobs/job-1/manifest.json": json.dumps({"job_id": "job-1", "kind": "images", "shards": PARTS}).encode()
}


def test_a_part_of_a_job_without_a_manifest_is_refused():
    with pytest.raises(UnknownMessage, match="the job has no manifest"):
        ledger.read_manifest(_S3(MANIFEST), CONFIG, "ghost")


def test_a_job_expanded_before_the_one_job_engine_has_no_parts_to_read():
    old = {"results/_jobs/job-1/manifest.json": json.dumps({"images": ["s3://pics/incoming/a.png"], "chunks": 1})}
    with pytest.raises(UnknownMessage, match="not a manifest of parts"):
        ledger.read_manifest(_S3({k: v.encode() for k, v in old.items()}), CONFIG, "job-1")


def test_a_manifest_that_cannot_be_read_now_means_retry_later():
    with pytest.raises(RetryLater, match="SlowDown"):
        ledger.read_manifest(_S3({}, code="SlowDown"), CONFIG, "job-1")


# --- a body settles alone: whatever parsing it raises, and even when the dead-letter queue is unreachable --------


def _message(body: str, n: int = 0):
    from runtime.agent.queue import Message

    return Message(f"m{n}", f"receipt-{n}", body, 1, 0.0, deadline=0.0)


def test_whatever_parsing_raises_refuses_that_message_alone(monkeypatch):
    from runtime.agent import prefetch

    real = prefetch.parse_body

    def parse(body, scope):
        if body == "bomb":
            raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")
        return real(body, scope)

    monkeypatch.setattr(prefetch, "parse_body", parse)
    batch = prefetch.Batch()
    fetcher = prefetch.Prefetcher(None, None, CONFIG)
    fetcher._add(
        batch,
        [
            _message(_upload("incoming/a.png"), 0),
            _message("bomb", 1),
            _message(_upload("incoming/b.png"), 2),
        ],
    )
    fetcher.close()

    assert [(m.id, reason.split(":")[0]) for m, reason in batch.unknown] == [("m1", "the body could not be read")]
    assert "RecursionError" in batch.unknown[0][1]
    assert [item.ref.key for item in batch.items] == ["incoming/a.png", "incoming/b.png"]


class _SQS:
    """Enough of SQS for one batch: the dead-letter queue refuses every message; settling calls are recorded."""

    def __init__(self):
        self.calls: list[tuple[str, list[str]]] = []

    def get_queue_attributes(self, QueueUrl, AttributeNames):
        return {"Attributes": {"RedrivePolicy": json.dumps({"deadLetterTargetArn": "arn:aws:sqs:r:1:dlq"})}}

    def get_queue_url(self, QueueName, QueueOwnerAWSAccountId):
        return {"QueueUrl": "dlq"}

    def send_message(self, **_):
        raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://sqs")

    def delete_message_batch(self, QueueUrl, Entries):
        self.calls.append(("delete", [e["ReceiptHandle"] for e in Entries]))
        return {}

    def change_message_visibility_batch(self, QueueUrl, Entries):
        self.calls.append(("release", [e["ReceiptHandle"] for e in Entries]))
        return {}


def test_an_unreachable_dead_letter_queue_sends_back_only_the_refused_message(tmp_path):
    from agent_support import FakeCaptioner
    from runtime.agent.prefetch import Batch
    from runtime.agent.worker import Worker

    sqs, s3 = _SQS(), type("S3", (), {"put_object": lambda self, **_: {}})()
    config = AgentConfig(queue_url="q", images_bucket="pics", cache_dir=str(tmp_path), retry_backoff_s=0)
    worker = Worker(config, FakeCaptioner("fake", "ab" * 32), {"sha256": "ab" * 32}, sqs=sqs, s3=s3)
    poison, event = _message("[" * 3000, 0), _message(_upload("incoming/a.png"), 1)
    worker.inbox._held = {m.id: m for m in (poison, event)}
    batch = Batch()
    worker.prefetcher._add(batch, [poison, event])
    batch.items[0].error = "not an image"  # no download: its error record is its result

    worker.process(batch)
    worker._writers.shutdown()

    assert sqs.calls == [("release", ["receipt-0"]), ("delete", ["receipt-1"])]
    assert worker.counters.retried == 1 and worker.counters.refused == 0 and worker.counters.failed == 1


def test_parts_of_one_job_read_its_manifest_again_only_when_it_changed():
    s3, manifests = _S3(MANIFEST), ledger.Manifests()
    for _index in (0, 1, 2):
        assert len(ledger.read_manifest(s3, CONFIG, "job-1", manifests)["shards"]) == 3
    assert s3.bodies_sent == 1
    [key] = MANIFEST
    s3.objects[key] = json.dumps({"job_id": "job-1", "kind": "images", "shards": PARTS[:1]}).encode()  # re-expanded
    assert len(ledger.read_manifest(s3, CONFIG, "job-1", manifests)["shards"]) == 1
    assert s3.bodies_sent == 2


def test_a_runs_queued_indexes_are_downloaded_once_per_agent_and_none_when_never_queued():
    key = "results/_jobs/job-1/runs/r1/queued.json"
    s3, kept = _S3({key: json.dumps({"run": "r1", "indexes": [0, 1, 2]}).encode()}), ledger.Manifests()
    assert [ledger.read_queued(s3, CONFIG, "job-1", "r1", kept)["indexes"] for _ in range(3)] == [[0, 1, 2]] * 3
    assert s3.bodies_sent == 1
    assert ledger.read_queued(s3, CONFIG, "job-1", "r2", kept) is None
