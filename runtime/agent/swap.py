"""Model hot swap: watch the pointer, load a new model in the background, hand it over between batches."""
from __future__ import annotations

import threading
import time

from runtime.agent.captioning import Captioner
from runtime.agent.config import AgentConfig
from runtime.agent.metrics import log
from runtime.agent.pointer import load_current
from runtime.errors import ArtifactError
from runtime.registry import read_pointer


class ModelWatcher:
    """Polls the pointer every `pointer_poll_s`; a model that fails to load is logged and skipped."""

    def __init__(self, config: AgentConfig, s3, device: str, current_sha: str):
        self.config, self.s3, self.device = config, s3, device
        self.wanted = current_sha  # the newest sha loaded or being handed over
        self.refused: str | None = None  # a sha whose artifact is unusable: not retried until it changes
        self._ready: tuple[Captioner, dict] | None = None
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
        started = time.monotonic()
        log("info", event="model_loading", sha256=sha, key=pointer["key"])
        try:
            captioner, _ = load_current(self.config, self.s3, self.device, pointer)
            warm_up(captioner)
        except ArtifactError as exc:
            self.refused = sha
            log("error", event="model_refused", sha256=sha, reason=str(exc), kept=self.wanted)
            return
        except Exception as exc:  # noqa: BLE001 - transient (download) or a loader bug: try next poll
            log("error", event="model_load_failed", sha256=sha, reason=f"{exc.__class__.__name__}: {exc}",
                kept=self.wanted)
            return
        with self._lock:
            self._ready, self.wanted = (captioner, pointer), sha
        log("info", event="model_ready", sha256=sha, name=captioner.name,
            load_s=round(time.monotonic() - started, 3))

    def take(self) -> tuple[Captioner, dict] | None:
        """The newly loaded (captioner, pointer), once, or None; call it between batches."""
        with self._lock:
            ready, self._ready = self._ready, None
        return ready


def warm_up(captioner: Captioner) -> float:
    """Caption one grey image so the first real batch pays no lazy-initialisation cost; seconds taken."""
    import PIL.Image

    started = time.monotonic()
    captioner.caption([PIL.Image.new("RGB", (64, 64), (127, 127, 127))])
    return time.monotonic() - started
