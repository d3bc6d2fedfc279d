"""The decode graphs of a model, captured on the serving thread before it serves; a failed capture is reported."""

from __future__ import annotations

from runtime.agent.metrics import CAPTURE_FAILED, embedded_metrics, log
from runtime.agent.work import Captioner
from runtime.errors import CaptureFailed


def prepare_decode(config, captioner: Captioner) -> dict:
    """Call the captioner's `prepare` (runtime.captioner.Captioner.prepare) on this thread, which must be the one
    that serves, and return its decode status. A failed capture is logged as an error with its cause and a
    CaptureFailed metric (CloudWatch embedded format); the model then serves on the eager loop, and every batch
    line says so in its `decode` field. An encoder that could not be captured is logged and counted the same way,
    while the step's graphs serve. A captioner without `prepare` (the tests' fakes) decodes as it does."""
    prepare = getattr(captioner, "prepare", None)
    if prepare is None:
        return {"decode": "eager"}
    try:
        status = prepare()
    except CaptureFailed as exc:
        status = captioner.decode_status()
        log(
            "error",
            event="capture_failed",
            sha256=captioner.sha256,
            name=captioner.name,
            reason=str(exc),
            decode=status["decode"],
            **embedded_metrics(config.metrics_namespace, _queue(config), {CAPTURE_FAILED: (1, "Count")}),
        )
        return status
    if status.get("encoder") == "eager, capture failed":  # the step's graphs serve, fed by the eager encoder
        log(
            "error",
            event="encoder_capture_failed",
            sha256=captioner.sha256,
            name=captioner.name,
            reason=status["encoder_reason"],
            decode=status["decode"],
            **embedded_metrics(config.metrics_namespace, _queue(config), {CAPTURE_FAILED: (1, "Count")}),
        )
        return status
    log("info", event="decode_ready", sha256=captioner.sha256, name=captioner.name, **status)
    return status


def decode_path(captioner: Captioner) -> str:
    """The batch line's `decode` field: how this captioner decodes ("cuda-graphs", "eager", "eager, capture
    failed", ...)."""
    status = getattr(captioner, "decode_status", None)
    return status()["decode"] if status is not None else "eager"


def _queue(config) -> dict[str, str]:
    return {"Queue": config.queue_url.rsplit("/", 1)[-1]}
