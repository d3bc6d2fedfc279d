"""The agent through a proxy that fails S3 and SQS calls (503s, dropped connections, an outage): nothing is lost."""

from __future__ import annotations

import threading
import time

import PIL.Image
import pytest

from agent_support import FakeCaptioner, Stack, png
from runtime import aws as agent_aws
from runtime.agent.model.pointer import load_current
from runtime.agent.worker import Worker
from tools.fault_proxy import FaultProxy


def test_every_input_ends_as_one_record_through_503s_dropped_connections_and_an_outage(aws, tmp_path, monkeypatch):
    stack = Stack(aws["AWS_ENDPOINT_URL"], tmp_path, max_receive=5)  # the stack's default receive limit
    stack.publish("fake-a")
    good = {f"incoming/good-{n:02d}.png": ((n * 9, 40, 0), (16 + n % 3, 12)) for n in range(24)}
    bad = {"incoming/bad-0.png": b"not an image", "incoming/bad-1.jpg": b""}
    for key, (colour, size) in good.items():
        stack.put(key, png(colour, size))
    for key, body in bad.items():
        stack.put(key, body)
    for key in [*good, *bad]:
        stack.send_event(key)
    config = stack.config(visibility_timeout_s=4, wait_time_s=1, batch_wait_s=0.1)

    with FaultProxy(aws["AWS_ENDPOINT_URL"], error_rate=0.1, drop_rate=0.04, seed=11) as proxy:
        # every kind of fault happens at least once whatever the timing: which calls the dice hit depends on how
        # many calls the agent makes outside the outage (CI once saw no SQS 503 at all), so these are scripted
        proxy.script("sqs", "error", None, "drop_after", None, "drop_before")
        proxy.script("s3", "error", None, "drop_before", None, "drop_after")
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        s3, sqs = agent_aws.client("s3"), agent_aws.client("sqs")
        captioner, pointer = load_current(config, stack.s3, "cpu")
        worker = Worker(config, captioner, pointer, sqs=sqs, s3=s3)
        worker.force_exit = lambda code: None
        runner = threading.Thread(target=worker.run)
        runner.start()
        try:
            time.sleep(0.5)
            proxy.outage(8.0)  # every S3 and SQS call fails for 8 s, past botocore's own retries
            deadline = time.monotonic() + 60
            while len(stack.keys()) < len(good) + len(bad) or stack.counts() != {"visible": 0, "in_flight": 0}:
                assert time.monotonic() < deadline, (proxy.counts, stack.keys(), stack.counts())
                time.sleep(0.5)
        finally:
            worker.stop("test over")
            runner.join(30)

    print("fault proxy:", dict(proxy.counts), "retried:", worker.counters.retried)
    assert stack.keys() == sorted(f"results/{key}.json" for key in [*good, *bad])  # exactly one record each
    reference = FakeCaptioner("fake-a", "")
    for key, (colour, size) in good.items():
        record = stack.result(key)
        expected = reference.caption([PIL.Image.new("RGB", size, colour)])[0]
        assert record["status"] == "ok" and record["caption"] == expected
    assert all(stack.result(key)["status"] == "error" for key in bad)
    assert stack.counts(stack.dlq) == {"visible": 0, "in_flight": 0}  # nothing good was dead-lettered
    assert not proxy.scripted["s3"] and not proxy.scripted["sqs"]  # the scripted faults all happened
    for fault in ("error", "drop_before", "drop_after"):
        assert proxy.counts[f"s3_{fault}"] and proxy.counts[f"sqs_{fault}"], (fault, proxy.counts)
    assert proxy.counts["sqs_outage"]


def test_a_head_through_the_proxy_keeps_the_objects_length(aws, tmp_path, monkeypatch):
    stack = Stack(aws["AWS_ENDPOINT_URL"], tmp_path)
    stack.put("incoming/sized.bin", b"x" * 12345)
    with FaultProxy(aws["AWS_ENDPOINT_URL"], error_rate=0.0, drop_rate=0.0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        head = agent_aws.client("s3").head_object(Bucket=stack.images, Key="incoming/sized.bin")
    assert head["ContentLength"] == 12345 and proxy.operations["s3 HEAD"] == 1


def test_scripted_faults_come_first_in_order_then_chance_decides_again(aws, tmp_path, monkeypatch):
    stack = Stack(aws["AWS_ENDPOINT_URL"], tmp_path)
    stack.put("incoming/a.bin", b"a")
    with FaultProxy(aws["AWS_ENDPOINT_URL"], error_rate=0.0, drop_rate=0.0) as proxy:
        proxy.script("s3", "error", None, "error")
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        s3 = agent_aws.client("s3")
        for _ in range(3):
            assert s3.get_object(Bucket=stack.images, Key="incoming/a.bin")["Body"].read() == b"a"
    # the two 503s were retried by botocore; the call between them and the later ones passed
    assert proxy.counts["s3_error"] == 2 and proxy.operations["s3 GET"] == 5 and not proxy.scripted["s3"]
    with pytest.raises(ValueError):
        proxy.script("s3", "outage")
