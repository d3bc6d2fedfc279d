"""Model hot swap: watch the pointer, load a new model in the background, hand it over between batches.

Loading in the background holds two models at once. Before that, the free device memory is compared with what
the new model needs (`MEMORY_HEADROOM` x its file size, the weights plus room for activations); when it does not
fit, the swap happens between batches instead: the old model is dropped, the new one loaded, the pause logged.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Callable

from runtime.agent.config import AgentConfig
from runtime.agent.metrics import log
from runtime.agent.model.pointer import load_current
from runtime.agent.work import Captioner
from runtime.errors import ArtifactError
from runtime.registry import read_pointer


class ModelWatcher:
    """Polls the pointer every `pointer_poll_s`; a model that fails to load is logged and skipped."""

    def __init__(
        self,
        config: AgentConfig,
        s3,
        device: str,
        current_sha: str,
        free_memory: Callable[[], int | None] | None = None,
    ):
        self.config, self.s3, self.device = config, s3, device
        self.wanted = current_sha  # the newest sha loaded or being handed over
        self.refused: str | None = None  # a sha whose artifact is unusable: not retried until it changes
        self.free_memory = free_memory or (lambda: device_free_bytes(device))
        self._ready: tuple[Captioner, dict] | None = None
        self._deferred: dict | None = None  # a pointer to load between batches (two models would not fit)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> None:
        if self.config.pointer_poll_s > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.config.pointer_poll_s):
            self.check()

    def check(self) -> None:
        """Read the pointer once; load the model it names if it is new."""
        try:
            pointer = read_pointer(self.s3, self.config.artifacts_bucket, self.config.model_pointer)
        except Exception as exc:  # noqa: BLE001 - keep serving the current model
            log("error", event="pointer_unreadable", reason=f"{exc.__class__.__name__}: {exc}")
            return
        sha = pointer["sha256"]
        if sha in (self.wanted, self.refused):
            return
        free, need = self.free_memory(), int(pointer.get("bytes") or 0) * MEMORY_HEADROOM
        if free is not None and free < need:
            with self._lock:
                self._deferred, self.wanted = pointer, sha
            log(
                "warning",
                event="swap_deferred",
                sha256=sha,
                free_bytes=free,
                needed_bytes=int(need),
                reason="two models would not fit on the device: the swap waits for the gap between two batches",
            )
            return
        captioner = self.load(pointer, kept=self.wanted)
        if captioner is not None:
            with self._lock:
                self._ready, self.wanted = (captioner, pointer), sha

    def load(self, pointer: dict, kept: str) -> Captioner | None:
        """Load and warm up the model `pointer` names, or log why not (None); a refused artifact is remembered.
        Nothing is captured here: a model not yet prepared warms up on the eager loop, and the serving thread
        captures its decode graphs before it serves (runtime.agent.model.capture)."""
        started, sha = time.monotonic(), pointer["sha256"]
        log("info", event="model_loading", sha256=sha, key=pointer["key"])
        try:
            captioner, _ = load_current(self.config, self.s3, self.device, pointer)
            warm_up(captioner)
        except ArtifactError as exc:
            self.refused = sha
            log("error", event="model_refused", sha256=sha, reason=str(exc), kept=kept)
            return None
        except Exception as exc:  # noqa: BLE001 - transient (download) or a loader bug: try next poll
            log("error", event="model_load_failed", sha256=sha, reason=f"{exc.__class__.__name__}: {exc}", kept=kept)
            return None
        log("info", event="model_ready", sha256=sha, name=captioner.name, load_s=round(time.monotonic() - started, 3))
        return captioner

    def take_deferred(self) -> dict | None:
        """The pointer of a swap that must happen between batches, once, or None."""
        with self._lock:
            deferred, self._deferred = self._deferred, None
        return deferred

    def swap_now(self, pointer: dict, old_pointer: dict, drop: Callable[[], None]) -> tuple[Captioner | None, dict]:
        """Between batches: `drop` every reference to the old model, load the new; if that fails, load the old
        one again. (None, old pointer) when neither loads: the caller exits and systemd starts it afresh."""
        started = time.monotonic()
        drop()
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
        captioner = self.load(pointer, kept=old_pointer["sha256"])
        if captioner is None:
            self.wanted, pointer = old_pointer["sha256"], old_pointer
            captioner = self.load(old_pointer, kept="nothing")
        log("warning", event="swap_pause", sha256=pointer["sha256"], pause_s=round(time.monotonic() - started, 3))
        return captioner, pointer

    def take(self) -> tuple[Captioner, dict] | None:
        """The newly loaded (captioner, pointer), once, or None; call it between batches."""
        with self._lock:
            ready, self._ready = self._ready, None
        return ready


MEMORY_HEADROOM = 1.5


def device_free_bytes(device: str) -> int | None:
    """Free memory on the CUDA device (torch.cuda.mem_get_info), or None where it does not apply (the CPU).
    https://pytorch.org/docs/stable/generated/torch.cuda.mem_get_info.html"""
    if device != "cuda":
        return None
    import torch

    return int(torch.cuda.mem_get_info()[0])


def warm_up(captioner: Captioner) -> float:
    """Caption one grey image so the first real batch pays no lazy-initialisation cost; seconds taken."""
    import PIL.Image

    started = time.monotonic()
    captioner.caption([PIL.Image.new("RGB", (64, 64), (127, 127, 127))])
    return time.monotonic() - started
