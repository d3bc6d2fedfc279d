"""The agent as a real process against moto's server: SIGTERM drain, second signal, kill -9, start-up errors."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from agent_support import AgentProcess, batches_started, png
from runtime import registry


def _wait_until(condition, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _queue_images(stack, count: int) -> list[str]:
    keys = [f"incoming/img-{n:02d}.png" for n in range(count)]
    for n, key in enumerate(keys):
        stack.put(key, png(colour=(n * 9, 100, 0)))
        stack.send_event(key)
    return keys


def _slow_real_model(stack, artifact, tmp_path, delay_s: float) -> tuple[Path, dict]:
    """Publish the real tiny .pt2, loaded through the real path but with slow device batches."""
    started = tmp_path / "started"
    stack.use_real_model(artifact, loader="agent_support:load_slow_captioner")
    return started, {"AGENT_TEST_DELAY_S": str(delay_s), "AGENT_TEST_STARTED_FILE": str(started)}


def test_sigterm_finishes_batch_then_exits(stack, aws, tmp_path):
    started = tmp_path / "started"
    stack.publish("fake-slow", delay_s=2.0, started_file=str(started))
    keys = _queue_images(stack, 8)
    agent = AgentProcess(stack.write_config(visibility_timeout_s=60), env=aws)
    try:
        _wait_until(lambda: batches_started(started) >= 1)
        agent.process.send_signal(signal.SIGTERM)
        code = agent.wait(20)
    finally:
        agent.kill()

    assert code == 0
    done = [key for key in keys if f"results/{key}.json" in stack.keys()]
    assert len(done) == 4 and batches_started(started) == 1  # the batch in hand, and nothing more
    assert stack.counts() == {"visible": 4, "in_flight": 0}  # the rest: visible again at once, not in 60 s
    assert agent.events("shutdown")[0]["done"] == 4
    assert agent.events("draining")[0]["reason"] == "signal SIGTERM"


def test_second_sigterm_exits_at_once(stack, aws, tmp_path):
    started = tmp_path / "started"
    stack.publish("fake-slow", delay_s=30.0, started_file=str(started))
    _queue_images(stack, 2)
    agent = AgentProcess(stack.write_config(), env=aws)
    try:
        _wait_until(lambda: batches_started(started) >= 1)
        agent.process.send_signal(signal.SIGTERM)
        agent.wait_for("draining")
        begun = time.monotonic()
        agent.process.send_signal(signal.SIGTERM)
        code = agent.wait(10)
    finally:
        agent.kill()
    assert code == 128 + signal.SIGTERM and time.monotonic() - begun < 5
    assert agent.events("exit_now")[0]["held"] == 2


def test_kill_9_mid_batch_then_a_fresh_agent_leaves_exactly_one_result_per_image(stack, aws, tmp_path, tiny_artifact):
    started, slow = _slow_real_model(stack, tiny_artifact, tmp_path, delay_s=1.0)
    keys = _queue_images(stack, 12)
    settings = stack.write_config(visibility_timeout_s=3)
    first = AgentProcess(settings, env={**aws, **slow})
    try:
        _wait_until(lambda: batches_started(started) >= 2, 90)  # one batch written, the second on the device
        first.process.kill()
        first.wait(10)
    finally:
        first.kill()
    written = len(stack.keys())
    pointer = json.loads(stack.s3.get_object(Bucket=stack.artifacts, Key=registry.POINTER_KEY)["Body"].read())
    assert 4 <= written < 12

    env_only = {
        **aws,
        **{f"CAPTIONKIT_{k.upper()}": str(v) for k, v in json.loads(settings.read_text()).items()},
        "AGENT_TEST_DELAY_S": "0",
    }
    fresh = AgentProcess(None, "--burst", env=env_only)  # settings from the environment alone
    assert fresh.wait(90) == 0

    assert stack.keys() == sorted(f"results/{key}.json" for key in keys)
    records = [stack.result(key) for key in keys]
    assert all(r["status"] == "ok" and r["model"]["sha256"] == pointer["sha256"] for r in records)
    assert stack.counts() == {"visible": 0, "in_flight": 0}
    assert stack.counts(stack.dlq) == {"visible": 0, "in_flight": 0}


def test_a_burst_run_without_a_model_pointer_is_a_clear_fatal_error(stack, aws):
    stack.s3.delete_object(Bucket=stack.artifacts, Key=registry.POINTER_KEY)
    agent = AgentProcess(stack.write_config(), "--burst", env=aws)
    assert agent.wait(30) == 2
    fatal = agent.events("fatal")[0]
    assert "no model pointer" in fatal["reason"] and "make upload" in fatal["reason"]


def test_a_service_started_before_the_first_upload_waits_for_the_model_then_serves(stack, aws):
    stack.s3.delete_object(Bucket=stack.artifacts, Key=registry.POINTER_KEY)
    agent = AgentProcess(stack.write_config(pointer_poll_s=0.5), env=aws)
    try:
        waiting = agent.wait_for("waiting_for_model", timeout_s=60)
        assert "make upload" in waiting["reason"] and agent.process.poll() is None
        pointer = stack.publish("fake-late")
        assert agent.wait_for("started", timeout_s=60)["sha256"] == pointer["sha256"]
        assert not agent.events("fatal")
    finally:
        agent.kill()


def test_start_up_refuses_an_artifact_whose_checksum_does_not_match(stack, aws):
    pointer = json.loads(stack.s3.get_object(Bucket=stack.artifacts, Key=registry.POINTER_KEY)["Body"].read())
    stack.s3.put_object(Bucket=stack.artifacts, Key=pointer["key"], Body=b'{"name": "tampered"}')
    agent = AgentProcess(stack.write_config(), env=aws)
    assert agent.wait(30) == 2
    assert "has sha256" in agent.events("fatal")[0]["reason"]
