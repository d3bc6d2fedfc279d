"""Progress bars on stderr through tqdm: redrawn on a terminal; elsewhere a line now and then, and always the last."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

EVERY_S = 5.0


class _Lines:
    """A file for tqdm that is not a terminal: each `\\r` redraw becomes a line at most every `every_s`, and the
    state tqdm shows when it closes is always written, so a log's last line is the final count (5/5, not 1/5)."""

    def __init__(self, stream: TextIO, every_s: float) -> None:
        self.stream, self.every_s, self.pending, self.last = stream, every_s, None, time.monotonic()

    def write(self, text: str) -> None:
        status = text.replace("\r", "").rstrip()
        if status:
            self.pending = status
            if time.monotonic() - self.last >= self.every_s:
                self._emit()
        if "\n" in text and self.pending:
            self._emit()

    def _emit(self) -> None:
        self.stream.write(self.pending + "\n")
        self.stream.flush()
        self.pending, self.last = None, time.monotonic()

    def flush(self) -> None:
        self.stream.flush()


def bar(
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    stream: TextIO | None = None,
    every_s: float = EVERY_S,
    **kwargs,
) -> tqdm:
    """A tqdm bar on `stream` (stderr); use it as a context manager so its final state is printed."""
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True, **kwargs)
    return tqdm(
        total=total, desc=desc, unit=unit, file=_Lines(stream, every_s), ncols=100, mininterval=every_s, **kwargs
    )
