"""Side-by-side timing: contenders run in rotation, so machine load hits each alike; medians with spread."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable


def interleaved(contenders: dict[str, Callable[[], object]], runs: int, warmup: int = 1) -> dict[str, dict]:
    """Run each contender `warmup` then `runs` times, rotating the order; seconds per contender."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for i in range(runs):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            started = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - started)
    return {name: summary(values) for name, values in times.items()}


def summary(values: list[float]) -> dict:
    """Median, min, max and the interquartile range of `values` (seconds)."""
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
    return {
        "median_s": statistics.median(ordered),
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "iqr_s": q[2] - q[0],
        "runs": len(ordered),
    }


def ratio(slow: dict, fast: dict) -> float:
    """How many times faster `fast` is than `slow` (median over median)."""
    return slow["median_s"] / fast["median_s"]


def vm_hwm_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
