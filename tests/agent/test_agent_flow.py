"""The agent against moto's server, in-process: bad inputs, idempotence, visibility, dead letters, hot swap."""

from __future__ import annotations

import json
import threading
import time

import PIL.Image

from agent_support import png


def _bomb() -> bytes:
    import io

    out = io.BytesIO()
    PIL.Image.new("1", (4000, 4000)).save(out, "PNG")  # small file, 16 M pixels: over the test's limit
    return out.getvalue()


def test_every_bad_input_ends_as_one_error_record_and_the_agent_carries_on(stack, agent_log):
    bad = {
        "incoming/empty.jpg": b"",
        "incoming/notes.jpg": b"this is a text file, not a picture",
        "incoming/truncated.png": png(size=(64, 64))[:60],
        "incoming/bomb.png": _bomb(),
    }
    for key, body in bad.items():
        stack.put(key, body)
    stack.put("incoming/good one.png", png())
    stack.send({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": stack.images})
    stack.send_event("incoming/empty.jpg", "incoming/notes.jpg")  # two records in one message
    stack.send_event("incoming/truncated.png")
    stack.send_event("incoming/bomb.png", "incoming/deleted.jpg")  # deleted.jpg never existed
    stack.send_event("incoming/good one.png")

    code = stack.worker(stack.config(max_pixels=1_000_000), burst=True).run()

    assert code == 0
    reasons = {key: stack.result(key) for key in [*bad, "incoming/deleted.jpg"]}
    assert all(record["status"] == "error" for record in reasons.values())
    assert "empty (0 bytes)" in reasons["incoming/empty.jpg"]["error"]
    assert "not a readable image" in reasons["incoming/notes.jpg"]["error"]
    assert "truncated" in reasons["incoming/truncated.png"]["error"]
    assert "over the limit of 1,000,000" in reasons["incoming/bomb.png"]["error"]
    assert "deleted (or never existed)" in reasons["incoming/deleted.jpg"]["error"]
    good = stack.result("incoming/good one.png")
    assert good["status"] == "ok" and good["caption"].startswith("fake-a: a 24x16 image")
    expected = sorted(f"results/{key}.json" for key in [*bad, "incoming/deleted.jpg", "incoming/good one.png"])
    assert stack.keys() == expected
    assert stack.counts() == {"visible": 0, "in_flight": 0}
    assert stack.counts(stack.dlq) == {"visible": 0, "in_flight": 0}
    batches = agent_log.events("batch")
    assert sum(line["failed"] for line in batches) == 5 and sum(line["images"] for line in batches) == 6


def test_redelivered_message_rewrites_a_byte_identical_result(stack):
    stack.s3.put_bucket_versioning(Bucket=stack.images, VersioningConfiguration={"Status": "Enabled"})
    stack.put("incoming/cat.jpg", png(fmt="JPEG"))
    stack.send_event("incoming/cat.jpg")
    stack.worker(burst=True).run()
    stack.send_event("incoming/cat.jpg")  # the same notification, delivered again
    stack.worker(burst=True).run()

    key = "results/incoming/cat.jpg.json"
    versions = stack.s3.list_object_versions(Bucket=stack.images, Prefix=key)["Versions"]
    bodies = {
        stack.s3.get_object(Bucket=stack.images, Key=key, VersionId=v["VersionId"])["Body"].read() for v in versions
    }
    assert len(versions) == 2 and len(bodies) == 1
    record = json.loads(bodies.pop())
    assert record["source"]["version_id"] and record["source"]["etag"] and record["model"]["name"] == "fake-a"


def test_visibility_is_extended_on_a_slow_batch(stack, agent_log):
    stack.s3.put_bucket_versioning(Bucket=stack.images, VersioningConfiguration={"Status": "Enabled"})
    stack.publish("fake-slow", delay_s=4.5)
    stack.put("incoming/slow.png", png())
    stack.send_event("incoming/slow.png")
    worker = stack.worker(stack.config(visibility_timeout_s=3), burst=True)
    runner = threading.Thread(target=worker.run)
    runner.start()
    _wait(lambda: worker.inbox.held())
    stolen = []
    while runner.is_alive():  # a second consumer never sees the message while the batch runs
        stolen += stack.sqs.receive_message(QueueUrl=stack.queue, VisibilityTimeout=0).get("Messages", [])
        time.sleep(0.2)
    runner.join()

    assert stolen == []
    assert worker.model.captioned == ["fake-slow: a 24x16 image of colour (200, 30, 30)"]
    assert stack.versions("results/incoming/slow.png.json") == 1
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def test_transient_failure_reaches_the_dead_letter_queue_after_the_receive_limit(stack, agent_log, tiny_artifact):
    stack.use_real_model(tiny_artifact)
    stack.put("incoming/ok.png", png())
    stack.send_event("incoming/ok.png")
    config = stack.config(results_bucket=f"missing-{stack.id}")  # every result write fails

    worker = stack.worker(config, burst=True)
    assert worker.run() == 0

    assert worker.counters.retried == 3 and worker.counters.done == 0
    dead = stack.sqs.receive_message(QueueUrl=stack.dlq, MessageSystemAttributeNames=["All"])["Messages"]
    assert len(dead) == 1 and "incoming/ok.png" in dead[0]["Body"]
    assert [line["receive_count"] for line in agent_log.events("retry")] == [1, 2, 3]
    assert "NoSuchBucket" in agent_log.events("retry")[0]["reason"]
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def test_unknown_bodies_go_to_the_dead_letter_queue_at_once(stack, agent_log):
    stack.send("this is not JSON")
    stack.send({"hello": "world"})
    stack.send({"type": "captionkit.job", "job_id": "no/slashes", "prefix": "s3://b/p/"})

    assert stack.worker(burst=True).run() == 0

    dead = stack.sqs.receive_message(QueueUrl=stack.dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])[
        "Messages"
    ]
    assert len(dead) == 3
    assert all(m["MessageAttributes"]["captionkit_error"]["StringValue"] for m in dead)
    assert len(agent_log.events("unknown_message")) == 3
    assert stack.keys() == []


def test_model_hot_swap_between_batches_loses_no_message(stack, agent_log, tiny_artifact, tmp_path):
    import artifact_tools
    from agent_support import renamed_artifact
    from runtime.agent.model.swap import ModelWatcher

    first = stack.use_real_model(tiny_artifact)
    second = renamed_artifact(tiny_artifact, tmp_path / "b.pt2", "tiny-b")
    refused = artifact_tools.rewrite_manifest(tiny_artifact, tmp_path / "c.pt2", torch_version="2.12.0")
    config = stack.config(pointer_poll_s=0.2)
    watcher = ModelWatcher(config, stack.s3, "cpu", first["sha256"])
    worker = stack.worker(config, watcher=watcher)
    watcher.start()
    runner = threading.Thread(target=worker.run)
    runner.start()
    keys = [f"incoming/{n:02d}.png" for n in range(24)]
    try:
        for n, key in enumerate(keys):
            stack.put(key, png(colour=(n * 10, 0, 0)))
            stack.send_event(key)
            if n == 8:
                stack.publish_file(second)
            if n == 16:
                _wait(lambda: agent_log.events("model_ready"))  # it swaps in before the next batch
                stack.publish_file(refused)  # fails to load: tiny-b stays
            time.sleep(0.05)
        _wait(lambda: len(stack.keys()) == len(keys) and agent_log.events("model_refused"))
    finally:
        worker.stop("test over")
        runner.join(30)
        watcher.stop()

    models = [stack.result(key)["model"]["name"] for key in keys]
    swap = models.index("tiny-b")
    assert 0 < swap and models == models[:1] * swap + ["tiny-b"] * (len(keys) - swap)  # never back
    assert stack.keys() == sorted(f"results/{key}.json" for key in keys)
    assert "torch 2.12.0" in agent_log.events("model_refused")[0]["reason"]
    assert len(agent_log.events("model_swapped")) == 1
    assert worker.model.name == "tiny-b"
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def _wait(condition, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
