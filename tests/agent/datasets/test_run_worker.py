"""Shard messages through the worker loop and the agent process: settling, stopping, retries, a kill -9."""

from __future__ import annotations

import json
import threading
import time

from shard_support import (
    MAX_IMAGE_BYTES,
    RUN,
    expected,
    make_parquet,
    make_tar,
    marker,
    output_table,
    put_job,
    put_shard,
)

from agent_support import AgentProcess, batches_started, png
from runtime.agent.layout import job_root
from runtime.agent.metrics import IMAGES_DONE, MESSAGE_IMAGES, MESSAGES_DONE


def _send_shard(stack, job_id: str, index: int, count: int) -> None:
    stack.send({"type": "captionkit.shard", "job_id": job_id, "index": index, "count": count, "run": RUN})


def _wait_until(condition, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_batch_runs_its_images_then_its_shards_in_turn(stack, agent_log):
    shards = [
        put_shard(stack, "incoming/data/a.tar", make_tar(expected(9)), "tar"),
        put_shard(stack, "incoming/data/b.parquet", make_parquet(expected(11)), "parquet"),
    ]
    put_job(stack, "job-w", shards)
    stack.put("incoming/alone.png", png())
    stack.send_event("incoming/alone.png")
    _send_shard(stack, "job-w", 0, 2)
    _send_shard(stack, "job-w", 1, 2)
    worker = stack.worker(stack.config(max_image_bytes=MAX_IMAGE_BYTES, batch_size=10), burst=True)

    assert worker.run() == 0

    assert stack.result("incoming/alone.png")["status"] == "ok"
    assert [len(output_table(stack, "job-w", index)) for index in (0, 1)] == [9, 11]
    assert marker(stack, "job-w", 0)["status"] == marker(stack, "job-w", 1)["status"] == "done"
    lines = agent_log.events("shard")
    assert sorted(line["index"] for line in lines) == [0, 1] and all(line["action"] == "done" for line in lines)
    assert {line["samples"] for line in lines} == {9, 11} and all(line["images_per_s"] > 0 for line in lines)
    bad = sum(1 for _, kind in expected(9) + expected(11) if kind != "ok")
    assert sum(line[IMAGES_DONE] for line in lines) == 20 - bad
    # each part's last line: its one message and every image it held, what the fleet's scaling multiplies by
    assert sorted((line[MESSAGES_DONE], line[MESSAGE_IMAGES]) for line in lines) == [(1, 9), (1, 11)]
    [batch] = agent_log.events("batch")  # the uploaded image: one message of one image
    assert (batch[MESSAGES_DONE], batch[MESSAGE_IMAGES]) == (1, 1)
    assert worker.counters.done == 1 + 20 - bad and worker.counters.failed == bad
    assert stack.counts() == {"visible": 0, "in_flight": 0}
    assert stack.counts(stack.dlq) == {"visible": 0, "in_flight": 0}
    summary = json.loads(
        stack.s3.get_object(Bucket=stack.images, Key=job_root(stack.config(), "job-w") + "summary.json")["Body"].read()
    )
    assert summary["shards_done"] == 2 and summary["images"] == 20


def test_a_forged_shard_message_is_dead_lettered_alone(stack):
    put_job(stack, "job-f", [put_shard(stack, "incoming/data/a.tar", make_tar(expected(3)), "tar")])
    _send_shard(stack, "job-f", 1, 3)  # the manifest has one shard
    assert stack.worker(burst=True).run() == 0
    assert stack.counts() == {"visible": 0, "in_flight": 0} and stack.counts(stack.dlq)["visible"] == 1
    assert marker(stack, "job-f", 1) is None


def test_a_worker_stopping_mid_shard_writes_nothing_and_releases_the_message(stack, tmp_path):
    started = tmp_path / "started"
    stack.publish("fake-slow", delay_s=0.3, started_file=str(started))
    root = put_job(stack, "job-s", [put_shard(stack, "incoming/data/s.tar", make_tar(expected(40)), "tar")])
    _send_shard(stack, "job-s", 0, 1)
    worker = stack.worker(stack.config(visibility_timeout_s=60), max_batches=1)
    thread = threading.Thread(target=worker.run)
    thread.start()
    _wait_until(lambda: batches_started(started) >= 1)
    worker.stop("a test")
    thread.join(30)

    assert not thread.is_alive() and batches_started(started) <= 2  # of 9
    assert marker(stack, "job-s", 0) is None and stack.keys(root + "shards/") == []
    assert stack.counts() == {"visible": 1, "in_flight": 0}  # released at once, not left to time out


def test_kill_9_mid_shard_then_the_redelivery_leaves_one_output_and_a_done_marker(stack, aws, tmp_path):
    started = tmp_path / "started"
    stack.publish("fake-slow", delay_s=0.5, started_file=str(started))
    plan = expected(24)
    root = put_job(stack, "job-k9", [put_shard(stack, "incoming/data/k.tar", make_tar(plan), "tar")])
    _send_shard(stack, "job-k9", 0, 1)
    settings = stack.write_config(visibility_timeout_s=3, max_image_bytes=MAX_IMAGE_BYTES)
    first = AgentProcess(settings, env=aws)
    try:
        _wait_until(lambda: batches_started(started) >= 2, 90)  # mid-shard, a device batch on the device
        first.process.kill()
        first.wait(10)
    finally:
        first.kill()
    assert stack.keys(root + "shards/") == [] and marker(stack, "job-k9", 0) is None  # nothing half-written

    fresh = AgentProcess(settings, "--burst", env=aws)
    assert fresh.wait(120) == 0, fresh.lines[-10:]

    assert stack.keys(root + "shards/") == [f"{root}shards/000000.parquet"]
    rows = output_table(stack, "job-k9", 0).to_pylist()
    assert [row["key"] for row in rows] == [key for key, _ in plan]
    assert all((row["caption"] is None) == (kind != "ok") for row, (_, kind) in zip(rows, plan))
    found = marker(stack, "job-k9", 0)
    assert found["status"] == "done" and found["samples"] == 24 and found["run"] == RUN
    crash = fresh.events("device_crash")[0]  # the killed device batch was named: its samples came back, alone
    assert crash["suspects"][0].startswith(f"s3://{stack.images}/incoming/data/k.tar#sample-")
    assert fresh.events("shard")[0]["action"] == "done"
    assert stack.counts() == {"visible": 0, "in_flight": 0}
    assert stack.counts(stack.dlq) == {"visible": 0, "in_flight": 0}


class _Inbox:
    def __init__(self, messages):
        self.messages, self.released, self.receives = messages, [], 0

    def receive(self, _count, _wait_s):
        self.receives += 1
        messages, self.messages = self.messages, []
        return messages

    def release(self, messages, delay_s=0):
        self.released.extend(messages)


def test_a_batch_holds_its_shard_messages_gathers_no_more_and_then_receives_one_at_a_time(stack):
    from runtime.agent.prefetch import Prefetcher
    from runtime.agent.work import Message

    bodies = [
        json.dumps({"type": "captionkit.shard", "job_id": "j", "index": n, "count": 3, "run": RUN}) for n in range(3)
    ]
    messages = [Message(f"m{n}", "r", body, 1, time.time(), time.monotonic() + 30) for n, body in enumerate(bodies)]
    inbox = _Inbox(messages)
    asked = []
    receive = inbox.receive
    inbox.receive = lambda count, wait_s: (asked.append(count), receive(count, wait_s))[1]
    prefetcher = Prefetcher(inbox, stack.s3, stack.config(batch_wait_s=30, batch_size=8))
    try:
        batch = prefetcher.fetch(None, 0)
        prefetcher.fetch(None, 0)
    finally:
        prefetcher.close()
    # none released: a release counts a receive towards the dead-letter queue without any work done
    assert batch.messages == messages and batch.shard_messages() == messages and not batch.items
    assert inbox.released == []
    assert asked == [8, 1]  # a shard ends the gathering; after a batch of shards, one message at a time


def test_a_shards_job_message_is_expanded_and_its_shards_captioned_by_the_same_worker(stack):
    put_shard(stack, "incoming/ds/a.tar", make_tar(expected(9)), "tar")
    put_shard(stack, "incoming/ds/b.parquet", make_parquet(expected(5)), "parquet")
    stack.send({"type": "captionkit.job", "job_id": "job-e", "run": RUN, "shards": f"s3://{stack.images}/incoming/ds/"})
    assert stack.worker(stack.config(max_image_bytes=MAX_IMAGE_BYTES), burst=True).run() == 0
    assert [len(output_table(stack, "job-e", index)) for index in (0, 1)] == [9, 5]
    summary = json.loads(
        stack.s3.get_object(Bucket=stack.images, Key=job_root(stack.config(), "job-e") + "summary.json")["Body"].read()
    )
    assert summary["shards_done"] == 2 and summary["images"] == 14 and summary["run"] == RUN
    assert stack.counts() == {"visible": 0, "in_flight": 0}
