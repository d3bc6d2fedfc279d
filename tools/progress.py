"""The laptop tools' progress, all drawn by tqdm: a bar that follows a job's counts, and the same meter as one line."""

from __future__ import annotations

from typing import TextIO

from tqdm import tqdm

from runtime.progress import bar


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`: short and unambiguous."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def line(
    done: int, total: int | None, *, failed: int = 0, rate: float | None = None, label: str = "", unit: str = "img"
) -> str:
    """The meter a following bar draws, once (`make status JOB=<id>`): finished/total, failures, rate and ETA."""
    finished = done + failed
    return tqdm.format_meter(
        finished,
        total,
        elapsed=finished / rate if rate else 0,
        ncols=100,
        prefix=label,
        ascii=True,
        unit=unit,
        rate=rate,
        postfix=f"failed={failed}" if failed else None,
    )


class Follow:
    """A tqdm bar over counts read from somewhere else (a job's files in S3). The bar starts at the first count it
    is shown, so a job joined halfway shows the rate from then on, not its history as one burst."""

    def __init__(self, label: str, stream: TextIO | None = None, every_s: float = 0.0, unit: str = "img") -> None:
        self.label, self.stream, self.every_s, self.unit, self.bar = label, stream, every_s, unit, None

    def show(self, done: int, failed: int, total: int | None) -> str:
        """Move the bar to `done + failed` of `total`; the meter as drawn."""
        finished = done + failed
        if self.bar is None:
            self.bar = bar(total, self.label, self.unit, self.stream, self.every_s, initial=finished)
        self.bar.total = total
        self.bar.set_postfix(failed=failed, refresh=False)
        self.bar.update(finished - self.bar.n)
        return str(self.bar)

    def write(self, text: str) -> None:
        """A message between redraws (tqdm keeps it off the bar's line)."""
        tqdm.write(text, file=self.bar.fp if self.bar is not None else self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
