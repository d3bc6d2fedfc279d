"""A one-line progress bar with a rate and an ETA measured over a sliding window, for status, collect and WAIT."""
from __future__ import annotations

import collections
import sys
import time
from typing import TextIO

WIDTH = 30
WINDOW_S = 120.0  # the rate is measured over the last two minutes of samples


class Meter:
    """Counts seen at times; `rate()` is items per second over the last `window_s`, None until it can tell."""

    def __init__(self, window_s: float = WINDOW_S, clock=time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, count: int) -> None:
        now = self.clock()
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()

    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else None


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`: short and unambiguous."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def line(done: int, total: int | None, *, failed: int = 0, rate: float | None = None, label: str = "") -> str:
    """`label [#####-----] 50/100 (2 failed) 3.1/s ETA 16s`; without a total, the count and the rate only."""
    finished = done + failed
    parts = [label] if label else []
    if total:
        filled = min(WIDTH, WIDTH * finished // total)
        parts.append(f"[{'#' * filled}{'-' * (WIDTH - filled)}] {finished}/{total}")
    else:
        parts.append(f"{finished}")
    if failed:
        parts.append(f"({failed} failed)")
    if rate is not None:
        parts.append(f"{rate:.1f}/s")
        if total and finished < total:
            parts.append(f"ETA {duration((total - finished) / rate)}" if rate > 0 else "ETA -")
    return " ".join(parts)


class Bar:
    """Redraws `line(...)` in place on a terminal (`\\r`), or prints a line at most every `every_s` elsewhere."""

    def __init__(self, label: str = "", total: int | None = None, stream: TextIO | None = None,
                 every_s: float = 5.0) -> None:
        self.label, self.total, self.stream, self.every_s = label, total, stream or sys.stderr, every_s
        self.meter, self.last_print = Meter(), 0.0
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def update(self, done: int, failed: int = 0, total: int | None = None, *, rate: float | None = None,
               force: bool = False) -> str:
        """Record and show a count; `rate` is the fallback until the bar has measured one itself."""
        self.total = total if total is not None else self.total
        self.meter.add(done + failed)
        measured = self.meter.rate()
        text = line(done, self.total, failed=failed, rate=rate if measured is None else measured, label=self.label)
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
        elif force or now - self.last_print >= self.every_s:
            self.stream.write(text + "\n")
            self.last_print = now
        return text

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
