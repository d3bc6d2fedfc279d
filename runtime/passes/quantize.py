"""CPU weight quantization at load time: the exported programs' linear layers onto fbgemm's dynamic kernels.

The artifact stays the float model that was proven token-identical to HF; quantizing is a deployment
choice, like the backend. `int8`: weights int8 per output channel, activations quantized per call
(per tensor, 7-bit as fbgemm needs on CPUs without VNNI); `fp16`: weights stored in float16, math in
float32. Captions can differ from the float model's; `python -m bench.model` reports how many agree.

`int8` weights are kept in the local cache (runtime.cache) as each linear's int8 values and per-channel scales:
rebuilding the quantized weight from them gives exactly the tensor `torch.quantize_per_channel` made, so captions
are the same with or without the cache. fbgemm's packed layout itself cannot be saved (torch pickles packed params
as the unpacked weight and repacks on load), so `linear_prepack` still runs. The key holds the artifact's SHA-256,
the torch build and the CPU (model name and vector ISA): quantize kernels may round differently on each.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
from torch import fx

from runtime import cache
from runtime.load_policy import check_quantize
from runtime.passes.linears import constant_linears, drop_unused_attrs, replace_with_call


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as lines:
            name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    except OSError:
        name = ""
    return f"{name}|{torch.backends.cpu.get_cpu_capability()}"


def int8_weights_file(cache_dir, sha256: str) -> Path | None:
    """Where the int8 weights of the artifact `sha256` made by this torch on this CPU are kept (runtime.cache)."""
    build = hashlib.sha256(f"{torch.__version__}|{_cpu()}".encode()).hexdigest()[:16]
    return cache.int8_file(cache_dir, sha256, build)


Weights = dict[str, list[tuple[torch.Tensor, torch.Tensor]]]  # program -> [(int8 values, float64 scales)], graph order


def load_int8(path: Path | None) -> Weights | None:
    """The kept weights, or None when there are none (or the file is unreadable: they are made again). The file is
    untrusted: `weights_only` unpickles tensors and containers only, and `_usable` checks each entry fits."""
    if path is None or not path.is_file():
        return None
    try:
        kept = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - damaged, edited or from another torch: quantize again and rewrite it
        return None
    return kept if isinstance(kept, dict) else None


def save_int8(path: Path | None, weights: Weights) -> None:
    """Keep `weights` (written to a temporary name, then renamed; best effort on a read-only cache)."""
    if path is not None:
        cache.write_whole(path, lambda partial: torch.save(weights, partial))


def rebuild_int8(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The per-channel qint8 weight (zero points 0, axis 0) from its kept values and scales."""
    zero_points = torch.zeros(values.shape[0], dtype=torch.long)
    return torch._make_per_channel_quantized_tensor(values, scales, zero_points, 0)


def _prepack_int8(weight: torch.Tensor, bias: torch.Tensor | None, kept, made: list):
    with warnings.catch_warnings():  # quantized tensors are deprecated after 2.13; fbgemm's prepack still takes them
        warnings.simplefilter("ignore", UserWarning)
        if kept is not None:
            qweight = rebuild_int8(*kept)
        else:
            scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
            zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
            qweight = torch.quantize_per_channel(weight, scales, zero_points, axis=0, dtype=torch.qint8)
            made.append((qweight.int_repr(), qweight.q_per_channel_scales()))
    return torch.ops.quantized.linear_prepack(qweight, bias)


def _prepack_fp16(weight: torch.Tensor, bias: torch.Tensor | None, kept, made: list):
    return torch.ops.quantized.linear_prepack_fp16(weight, bias)


def _usable(kept, linears: list) -> bool:
    """Whether a cache entry (untrusted: anyone who can write the cache folder) fits these linears exactly: int8
    values of each weight's shape, one positive finite float64 scale per output channel. Else it is made again."""

    def fits(pair, linear) -> bool:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, torch.Tensor) for t in pair)):
            return False
        values, scales = pair
        return (
            values.dtype == torch.int8
            and values.shape == linear.weight.shape
            and scales.dtype == torch.float64
            and scales.shape == (linear.weight.shape[0],)
            and bool(torch.isfinite(scales).all())
            and bool((scales > 0).all())
        )

    return isinstance(kept, list) and len(kept) == len(linears) and all(map(fits, kept, linears))


def quantize_module(gm: fx.GraphModule, mode: str, kept: list | None = None, made: list | None = None) -> int:
    """Rewrite every float32 linear with constant weights in `gm` to a quantized dynamic linear; returns how many.

    int8: `kept` are this program's weights from the cache (used if they fit its linears); the int8
    weights quantized here are appended to `made`, for the cache.
    """
    prepack = {"int8": _prepack_int8, "fp16": _prepack_fp16}[mode]
    graph = gm.graph
    linears = constant_linears(gm)
    kept = kept if _usable(kept, linears) else None
    made = [] if made is None else made
    replaced: dict[fx.Node, fx.Node] = {}  # a linear fed by another (TrOCR's enc_to_dec_proj -> k/v) reads the new node
    for i, linear in enumerate(linears):
        x = replaced.get(linear.x, linear.x)
        name = f"_captionkit_{mode}_linear_{i}"
        setattr(gm, name, prepack(linear.weight.contiguous(), linear.bias, kept[i] if kept else None, made))
        with graph.inserting_before(linear.node), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # fx expects modules/tensors; a packed-params object is fine
            packed = graph.get_attr(name)
        if mode == "int8":
            new = replace_with_call(graph, linear.node, torch.ops.quantized.linear_dynamic.default, (x, packed, True))
        else:
            new = replace_with_call(graph, linear.node, torch.ops.quantized.linear_dynamic_fp16.default, (x, packed))
        replaced[linear.node] = new
    drop_unused_attrs(gm)  # float weights only the linears read are freed (a tied embedding stays)
    return len(linears)


def quantize_programs(
    programs: dict[str, fx.GraphModule], mode: str, device: torch.device, dtype: str, cache_file=None
) -> dict:
    """Quantize the loaded programs in place (CPU, float32 artifacts only); returns linears rewritten per program.

    `cache_file` (`int8_weights_file`): int8 weights kept there are used, and ones made here are kept.
    """
    check_quantize(mode, device, dtype)
    kept = (load_int8(cache_file) or {}) if mode == "int8" else {}
    made: dict[str, list] = {name: [] for name in programs}
    counts = {name: quantize_module(gm, mode, kept.get(name), made[name]) for name, gm in programs.items()}
    if mode == "int8" and any(made.values()):
        save_int8(cache_file, {name: made[name] or kept.get(name, []) for name in programs})
    return counts
