"""The agent against moto, in-process: permanent S3 errors, replaced objects, long keys, a swap that must wait."""

from __future__ import annotations

import json
import urllib.parse

from agent_support import png
from runtime.agent.model.swap import ModelWatcher


def _event(stack, key: str, etag: str | None = None) -> dict:
    obj = {"key": urllib.parse.quote_plus(key, safe="/"), "size": 1, **({"eTag": etag} if etag else {})}
    return {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": stack.images}, "object": obj}}]}


def test_permanent_s3_errors_become_error_records_at_once(stack, agent_log):
    stack.send(_event(stack, "incoming/lost.png"))  # never uploaded (another bucket is refused: test_agent_hostile)
    stack.put("incoming/ok.png", png())
    stack.send_event("incoming/ok.png")

    worker = stack.worker(burst=True)
    assert worker.run() == 0

    lost = stack.result("incoming/lost.png")
    assert lost["status"] == "error" and "deleted (or never existed)" in lost["error"]
    assert stack.result("incoming/ok.png")["status"] == "ok"
    assert worker.counters.retried == 0 and agent_log.events("retry") == []  # no retry budget burnt
    assert stack.counts(stack.dlq) == {"visible": 0, "in_flight": 0}


def test_an_event_for_a_replaced_object_is_skipped_and_the_newer_event_captions_the_new_bytes(stack, agent_log):
    old = stack.s3.put_object(Bucket=stack.images, Key="incoming/cat.png", Body=png((10, 10, 10)))["ETag"]
    new = stack.s3.put_object(Bucket=stack.images, Key="incoming/cat.png", Body=png((90, 90, 90), size=(30, 20)))[
        "ETag"
    ]
    stack.send(_event(stack, "incoming/cat.png", etag=old.strip('"')))
    stack.send(_event(stack, "incoming/cat.png", etag=new.strip('"')))

    worker = stack.worker(burst=True)
    assert worker.run() == 0

    record = stack.result("incoming/cat.png")
    assert record["caption"].startswith("fake-a: a 30x20 image") and record["source"]["etag"] == new.strip('"')
    assert "replaced after this event" in " ".join(line["note"] for line in agent_log.events("skipped"))
    assert stack.versions("results/incoming/cat.png.json") <= 1 and worker.model.captioned == [record["caption"]]
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def test_a_source_key_too_long_for_its_result_key_gets_a_hashed_result_key(stack):
    key = "incoming/" + "k" * 1005 + ".png"
    stack.put(key, png())
    stack.send_event(key)

    assert stack.worker(burst=True).run() == 0

    [written] = stack.keys()
    record = json.loads(stack.s3.get_object(Bucket=stack.images, Key=written)["Body"].read())
    assert written.startswith("results/_long-keys/") and record["source"]["key"] == key and record["status"] == "ok"


def test_a_model_that_does_not_fit_beside_the_old_one_is_swapped_between_batches(stack, agent_log):
    config = stack.config(batch_size=1)
    worker = stack.worker(config, max_batches=2)
    second = stack.publish("fake-b")
    watcher = ModelWatcher(config, stack.s3, "cpu", worker.pointer["sha256"], free_memory=lambda: 8)
    worker.watcher = watcher
    for n in range(2):
        stack.put(f"incoming/{n}.png", png((n, 0, 0)))
        stack.send_event(f"incoming/{n}.png")

    watcher.check()  # the new model's 1.5 x file size does not fit in 8 free bytes: not loaded beside the old
    assert watcher.take() is None and agent_log.events("swap_deferred")[0]["free_bytes"] == 8
    assert worker.run() == 0

    assert {stack.result(f"incoming/{n}.png")["model"]["name"] for n in range(2)} == {"fake-b"}
    assert agent_log.events("swap_pause")[0]["sha256"] == second["sha256"]
    assert agent_log.events("model_swapped")[0]["paused"] is True and worker.model.name == "fake-b"


def test_an_object_overwritten_while_it_is_captioned_gets_no_stale_result(stack, agent_log):
    stack.s3.put_bucket_versioning(Bucket=stack.images, VersioningConfiguration={"Status": "Enabled"})
    first = stack.s3.put_object(Bucket=stack.images, Key="incoming/dog.png", Body=png((10, 10, 10)))["ETag"]
    stack.send(_event(stack, "incoming/dog.png", etag=first.strip('"')))
    worker = stack.worker(burst=True)
    captioner = worker.model
    real = captioner.caption_pixels

    def overwritten_mid_batch(pixels):  # a second upload lands while the device runs the first
        second = stack.s3.put_object(Bucket=stack.images, Key="incoming/dog.png", Body=png((90, 0, 0), (30, 20)))
        stack.send(_event(stack, "incoming/dog.png", etag=second["ETag"].strip('"')))
        captioner.caption_pixels = real
        return real(pixels)

    captioner.caption_pixels = overwritten_mid_batch
    assert worker.run() == 0

    record = stack.result("incoming/dog.png")
    assert record["caption"].startswith("fake-a: a 30x20 image")  # the newer bytes, never the older caption
    assert stack.versions("results/incoming/dog.png.json") == 1  # the older caption was never written at all
    notes = " ".join(line["note"] for line in agent_log.events("skipped"))
    assert record["source"]["version_id"] and "replaced while it was captioned" in notes
