"""CPU weight quantization at load time: the exported programs' linear layers onto fbgemm's dynamic kernels.

The artifact stays the float model that was proven token-identical to HF; quantizing is a deployment
choice, like the backend. `int8`: weights int8 per output channel, activations quantized per call
(per tensor, 7-bit as fbgemm needs on CPUs without VNNI); `fp16`: weights stored in float16, math in
float32. Captions can differ from the float model's; `python -m bench.model` reports how many agree.
"""
from __future__ import annotations

import warnings

import torch
from torch import fx

from runtime.errors import ArtifactError

MODES = ("int8", "fp16")


def _prepack_int8(weight: torch.Tensor, bias: torch.Tensor | None):
    scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensors are deprecated after 2.13; fbgemm's prepack still takes them
        warnings.simplefilter("ignore", UserWarning)
        qweight = torch.quantize_per_channel(weight, scales, zero_points, axis=0, dtype=torch.qint8)
    return torch.ops.quantized.linear_prepack(qweight, bias)


def _prepack_fp16(weight: torch.Tensor, bias: torch.Tensor | None):
    return torch.ops.quantized.linear_prepack_fp16(weight, bias)


def _linear_parts(node: fx.Node):
    """(input, weight node, bias node or None, weight is [in, out]) for a linear-shaped node, else None."""
    if node.op != "call_function":
        return None
    if node.target is torch.ops.aten.linear.default:
        x, weight = node.args[0], node.args[1]
        bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        return x, weight, bias, False
    if node.target is torch.ops.aten.addmm.default and not node.kwargs and len(node.args) == 3:
        bias, x, weight = node.args  # GPT-2's Conv1D: x @ W + b with W stored [in, out]
        return x, weight, bias, True
    return None


def _attr(module: torch.nn.Module, target: str):
    for part in target.split("."):
        module = getattr(module, part)
    return module


def _drop_attr(module: torch.nn.Module, target: str) -> None:
    *owner, name = target.split(".")
    parent = _attr(module, ".".join(owner)) if owner else module
    delattr(parent, name)


def quantize_module(gm: fx.GraphModule, mode: str) -> int:
    """Rewrite every float32 linear with constant weights in `gm` to a quantized dynamic linear; returns how many."""
    prepack = {"int8": _prepack_int8, "fp16": _prepack_fp16}[mode]
    graph = gm.graph
    count = 0
    for node in list(graph.nodes):
        parts = _linear_parts(node)
        if parts is None:
            continue
        x, weight_node, bias_node, transposed = parts
        if not isinstance(weight_node, fx.Node) or weight_node.op != "get_attr":
            continue
        if bias_node is not None and (not isinstance(bias_node, fx.Node) or bias_node.op != "get_attr"):
            continue
        weight = _attr(gm, weight_node.target)
        if weight.dim() != 2 or weight.dtype != torch.float32:
            continue
        bias = _attr(gm, bias_node.target).detach() if bias_node is not None else None
        weight = weight.detach().t() if transposed else weight.detach()
        name = f"_captionkit_{mode}_linear_{count}"
        setattr(gm, name, prepack(weight.contiguous(), bias))
        with graph.inserting_before(node), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # fx expects modules/tensors; a packed-params object is fine
            packed = graph.get_attr(name)
            if mode == "int8":
                new = graph.call_function(torch.ops.quantized.linear_dynamic.default, (x, packed, True))
            else:
                new = graph.call_function(torch.ops.quantized.linear_dynamic_fp16.default, (x, packed))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        count += 1
    for node in list(graph.nodes):  # float weights only the linears read are freed (a tied embedding stays)
        if node.op == "get_attr" and not node.users:
            target = node.target
            graph.erase_node(node)
            if not any(n.op == "get_attr" and n.target == target for n in graph.nodes):
                _drop_attr(gm, target)
    gm.recompile()
    return count


def quantize_programs(programs: dict[str, fx.GraphModule], mode: str, device: torch.device, dtype: str) -> dict:
    """Quantize the loaded programs in place (CPU, float32 artifacts only); returns linears rewritten per program."""
    if mode not in MODES:
        raise ValueError(f"quantize must be one of {MODES}, not {mode!r}")
    if device.type != "cpu":
        raise ArtifactError(f"quantize={mode} runs fbgemm CPU kernels; on {device.type} use an artifact exported "
                            "with --dtype float16 or bfloat16 instead")
    if dtype != "float32":
        raise ArtifactError(f"quantize={mode} needs a float32 artifact (this one is {dtype}); export with --dtype float32")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise ArtifactError(f"quantize={mode}: this torch build has no fbgemm engine (x86 CPUs only)")
    return {name: quantize_module(gm, mode) for name, gm in programs.items()}
