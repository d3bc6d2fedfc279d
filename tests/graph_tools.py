"""Test helper for the decode graphs on the CPU: a capture function that records who captured what, and a loader."""

from __future__ import annotations

import threading

from runtime.captioner import load_captioner
from runtime.decode.cuda_graphs import DEVICE_LOCK, StaticDecoder, StaticOptions


class RecordedCaptures:
    """Stands in for runtime.decode.cuda_graphs.CudaGraphs: each capture is recorded (thread, model, bucket, whether the
    decoder's lock was held) and its "replay" calls the tick; `fail_at` (images x beams, "8x1 encoder" for a bucket's
    encoder) raises as a capture would."""

    def __init__(self, lock=DEVICE_LOCK, fail_at: str | None = None, model: str = ""):
        self.lock, self.fail_at, self.model = lock, fail_at, model
        # ("capture", thread, model, "8x1", lock held) and ("replay", thread, model, "8x1")
        self.events: list[tuple] = []

    def __call__(self, tick, reset, warmup):
        bucket = tick.__self__
        label = f"{bucket.items}x{bucket.settings.num_beams}" + (" encoder" if tick.__name__ == "_encode_tick" else "")
        self.events.append(("capture", threading.current_thread().name, self.model, label, self.lock._is_owned()))
        if label == self.fail_at:
            raise RuntimeError("operation not permitted when stream is capturing")
        reset()

        def replay():
            self.events.append(("replay", threading.current_thread().name, self.model, label))
            tick()

        return replay

    def captures(self) -> list[tuple]:
        return [event for event in self.events if event[0] == "capture"]


# every captioner load_with_recorded_captures made, in order (the agent loads through a "module:function" spec)
RECORDED: list[RecordedCaptures] = []


def load_with_recorded_captures(path, **kwargs):
    """The agent's loader on the CPU with a decoder that captures as on CUDA, through a RecordedCaptures."""
    captioner = load_captioner(path, **kwargs)
    captures = RecordedCaptures(model=captioner.name, fail_at=FAIL_AT.get(captioner.name))
    captioner.static = StaticDecoder(
        captioner.step, captioner.max_batch, StaticOptions(), capture=captures, encoder=captioner._checked_encoder
    )  # as runtime.decode.cuda_graphs makes it
    RECORDED.append(captures)
    return captioner


FAIL_AT: dict[str, str] = {}  # model name -> the bucket whose capture fails
