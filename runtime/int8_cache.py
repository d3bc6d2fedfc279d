"""The int8 weights `quantize=int8` made for an artifact, kept in the local cache so a restart does not redo them.

What is kept is each linear's int8 values and per-channel scales, as plain tensors: rebuilding the quantized
weight from them gives exactly the tensor `torch.quantize_per_channel` made (the same values, scales and zero
points), so captions are the same with or without the cache. fbgemm's packed layout itself cannot be saved
(torch pickles packed params as the unpacked weight and repacks on load), so `linear_prepack` still runs.
The key is the artifact's SHA-256, the torch release and the CPU (model name and vector ISA): rounding in
torch's quantize kernels may differ between builds and instruction sets.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from runtime.cache_write import write_whole

INT8_DIR = "int8"


def _cpu() -> str:
    try:
        name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    except OSError:
        name = ""
    return f"{name}|{torch.backends.cpu.get_cpu_capability()}"


def cache_file(cache_dir: str | os.PathLike | None, sha256: str) -> Path | None:
    """`<cache>/int8/<sha256>-<torch, CPU digest>.pt`, or None without a cache dir or a known SHA-256."""
    if cache_dir is None or not sha256:
        return None
    where = hashlib.sha256(f"{torch.__version__}|{_cpu()}".encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / INT8_DIR / f"{sha256}-{where}.pt"


Weights = dict[str, list[tuple[torch.Tensor, torch.Tensor]]]  # program -> [(int8 values, float64 scales)] in graph order


def load(path: Path | None) -> Weights | None:
    """The kept weights, or None when there are none (or the file is unreadable: they are made again). The file is
    untrusted: `weights_only` unpickles tensors and containers only, and runtime.quantize checks each entry fits."""
    if path is None or not path.is_file():
        return None
    try:
        kept = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - damaged, edited or from another torch: quantize again and rewrite it
        return None
    return kept if isinstance(kept, dict) else None


def save(path: Path | None, weights: Weights) -> None:
    """Keep `weights` (written to a temporary name, then renamed; best effort on a read-only cache)."""
    if path is not None:
        write_whole(path, lambda partial: torch.save(weights, partial))


def rebuild(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The per-channel qint8 weight (zero points 0, axis 0) from its kept values and scales."""
    zero_points = torch.zeros(values.shape[0], dtype=torch.long)
    return torch._make_per_channel_quantized_tensor(values, scales, zero_points, 0)
