"""The agent captures a model's decode graphs on its serving thread before the model serves, and reports a failure."""

from __future__ import annotations

import threading
import time

import graph_tools
from agent_support import png, renamed_artifact
from runtime.agent.metrics import CAPTURE_FAILED
from runtime.agent.model.swap import ModelWatcher
from runtime.decode.cuda_graphs import buckets

LOADER = "graph_tools:load_with_recorded_captures"


def _wait(condition, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _serve(stack, config, watcher, keys: list[str], publish_after: int | None = None, second=None, loaded=None):
    """Run a worker on a thread named "serving" until every key has a result; publish `second` midway and wait
    until `loaded()` (the watcher has it) before the next image."""
    worker = stack.worker(config, watcher=watcher)
    if watcher:
        watcher.start()
    runner = threading.Thread(target=worker.run, name="serving")
    runner.start()
    try:
        for n, key in enumerate(keys):
            stack.put(key, png(colour=(n * 20, 0, 0)))
            stack.send_event(key)
            if n == publish_after:
                _wait(lambda: len(stack.keys()) == n + 1)  # served by the first model
                stack.publish_file(second)
                _wait(loaded)
        _wait(lambda: len(stack.keys()) == len(keys))
    finally:
        worker.stop("test over")
        runner.join(30)
        if watcher:
            watcher.stop()
    return worker


def _serve_failing(stack, tiny_artifact, part: str) -> tuple[str, list[str]]:
    """Serve three images with the model whose bucket 2 x beams fails to capture (its step; with part=" encoder",
    its encoder); the bucket's label and the keys served."""
    graph_tools.RECORDED.clear()
    stack.use_real_model(tiny_artifact, loader=LOADER)
    config = stack.config()
    model = graph_tools.load_with_recorded_captures(tiny_artifact, device="cpu")
    graph_tools.RECORDED.clear()
    bucket = f"2x{model.settings.num_beams}"
    graph_tools.FAIL_AT[model.name] = f"{bucket}{part}"
    keys = [f"incoming/{n:02d}.png" for n in range(3)]
    try:
        _serve(stack, config, None, keys)
    finally:
        graph_tools.FAIL_AT.clear()
    return bucket, keys


def test_the_serving_thread_captures_each_model_before_it_serves_and_the_watcher_never_does(
    stack, agent_log, tiny_artifact, tmp_path
):
    graph_tools.RECORDED.clear()
    first = stack.use_real_model(tiny_artifact, loader=LOADER)
    second = renamed_artifact(tiny_artifact, tmp_path / "b.pt2", "tiny-b")
    config = stack.config(pointer_poll_s=0.2)
    watcher = ModelWatcher(config, stack.s3, "cpu", first["sha256"])
    keys = [f"incoming/{n:02d}.png" for n in range(6)]
    worker = _serve(
        stack, config, watcher, keys, publish_after=2, second=second, loaded=lambda: agent_log.events("model_ready")
    )

    served = [stack.result(key)["model"]["name"] for key in keys]
    assert "tiny-b" in served and served[0] != "tiny-b"
    beams = worker.model.settings.num_beams
    labels = [f"{size}x{beams}" for size in buckets(worker.model.max_batch)]
    for captures in graph_tools.RECORDED:  # the first model, then the swapped-in one
        events = captures.events
        made = [event for event in events if event[0] == "capture"]
        assert [event[3] for event in made] == [x for label in labels for x in (label, f"{label} encoder")]
        assert {event[1] for event in events} == {"serving"}, events  # captures and replays alike
        assert all(event[4] for event in made)  # under the device lock
        first_replay = next(i for i, event in enumerate(events) if event[0] == "replay")
        assert first_replay == len(made)  # every bucket made before the model's first caption
    assert [captures.model for captures in graph_tools.RECORDED] == [served[0], "tiny-b"]
    assert [line["decode"] for line in agent_log.events("decode_ready")] == ["cuda-graphs", "cuda-graphs"]
    assert agent_log.events("model_swapped")[0]["decode"] == "cuda-graphs"
    assert {line["decode"] for line in agent_log.events("batch")} == {"cuda-graphs"}


def test_a_failed_capture_is_reported_with_its_cause_a_metric_and_on_every_batch_line(stack, agent_log, tiny_artifact):
    bucket, keys = _serve_failing(stack, tiny_artifact, "")

    failed = agent_log.events("capture_failed")
    assert len(failed) == 1 and failed[0]["decode"] == "eager, capture failed"
    assert failed[0]["reason"] == (
        f"bucket {bucket} (images x beams): RuntimeError: operation not permitted when stream is capturing"
    )
    assert failed[0][CAPTURE_FAILED] == 1
    assert failed[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [{"Name": CAPTURE_FAILED, "Unit": "Count"}]
    batches = agent_log.events("batch")
    assert batches and {line["decode"] for line in batches} == {"eager, capture failed"}
    assert all(stack.result(key)["status"] == "ok" for key in keys)  # served, on the eager loop
    assert [event for event in graph_tools.RECORDED[0].events if event[0] == "replay"] == []


def test_an_encoder_that_cannot_be_captured_is_reported_and_the_step_graphs_serve(stack, agent_log, tiny_artifact):
    bucket, keys = _serve_failing(stack, tiny_artifact, " encoder")

    (failed,) = agent_log.events("encoder_capture_failed")
    assert failed["decode"] == "cuda-graphs" and failed[CAPTURE_FAILED] == 1
    assert failed["reason"] == f"bucket {bucket}: RuntimeError: operation not permitted when stream is capturing"
    assert agent_log.events("capture_failed") == [] and agent_log.events("decode_ready") == []
    assert {line["decode"] for line in agent_log.events("batch")} == {"cuda-graphs"}
    assert all(stack.result(key)["status"] == "ok" for key in keys)
    replayed = {event[3] for event in graph_tools.RECORDED[0].events if event[0] == "replay"}
    assert replayed and f"{bucket} encoder" not in replayed
