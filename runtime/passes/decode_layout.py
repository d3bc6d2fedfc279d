"""CPU decode layout: the decoder step's linears computed as weight @ x.T when a step has several rows.

A decode step multiplies a handful of rows (batch x beams) by every weight matrix; `(W @ x.T).T` streams the
[out, in] weight once where MKL's `x @ W.T` does not (BENCHMARKS.md, "Decode layout"). One row keeps `F.linear`
(its matrix-vector path is already right), so batch-1 results are bit-identical. GPT-2's Conv1D layers ([in, out]
weights, addmm) keep their own weight for one row, where `x @ W` on it is the fastest form, and gain an [out, in]
copy for several rows, where MKL's `x @ W` was 1.3-2.5x slower than `(W.T @ x.T).T` on a contiguous copy: the
copy costs the memory of those weights once more (340 MB for GPT-2 small), measured worth it in BENCHMARKS.md.
With several rows the sums run in another order: logits may differ in the last bits.

Where this torch's oneDNN can pack a weight (`packed_linears`), the several-row path multiplies by a oneDNN-packed
copy instead of the [out, in] copy (the same memory): ViT-GPT2 base captions 1.24x faster at greedy batch 8 and
1.56x at 4 beams, batch 1, with the same captions (BENCHMARKS.md, "CPU against its limit"). One row keeps the
artifact's own weight either way (no faster packed). A bfloat16 step's linears all run on packed weights, one row
too (faster there from one row on); their exported weights are freed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx

from runtime.passes.linears import constant_linears, drop_unused_attrs, replace_with_call

PACK_ROWS = 8  # the rows oneDNN is told to expect when it packs a weight (any number of rows is then correct)


def packed_linears() -> bool:
    """True where this torch's oneDNN packs linear weights (`torch.ops.mkldnn`; x86 builds have it): tried once on
    a tiny weight, so a build without it keeps the transposed copies."""
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(torch.ones(4, 4), PACK_ROWS)
        torch.ops.mkldnn._linear_pointwise(torch.ones(2, 4), packed, torch.zeros(4), "none", [], "")
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True


def _packed(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def decode_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, packed: torch.Tensor | None = None
) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, computed as `(weight @ x.T).T` (or on the oneDNN-`packed` weight) when x has
    several rows."""
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] == 1:
        return F.linear(x, weight, bias)
    if packed is not None:
        return _packed(flat, packed, bias).reshape(*x.shape[:-1], weight.shape[0])
    out = torch.mm(weight, flat.t()) if bias is None else torch.addmm(bias[:, None], weight, flat.t())
    return out.t().reshape(*x.shape[:-1], weight.shape[0])


def decode_conv1d(x: torch.Tensor, weight: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GPT-2's Conv1D `addmm(bias, x, weight)` ([in, out] weight, 2-D x): as is for one row, else
    `(weight_t @ x.T).T` on the contiguous [out, in] copy `weight_t`, or oneDNN's product when `weight_t` is that
    copy packed."""
    if x.shape[0] == 1:
        return torch.addmm(bias, x, weight)
    if weight_t.is_mkldnn:
        return _packed(x, weight_t, bias)
    return torch.addmm(bias[:, None], weight_t, x.t()).t()


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`x @ W.T + bias` on oneDNN's `packed` W, for any number of rows: a bfloat16 step's linears, where the packed
    product is faster from one row on."""
    flat = x.reshape(-1, x.shape[-1])
    return _packed(flat, packed, bias).reshape(*x.shape[:-1], packed.shape[0])


def apply_decode_layout(gm: fx.GraphModule, pack: bool | None = None) -> int:
    """Rewrite the float32 linears of a decoder-step program: `aten.linear` to `decode_linear`, GPT-2's Conv1D
    `addmm` to `decode_conv1d` with an [out, in] copy of its weight, that copy oneDNN-packed when `pack` (default:
    where `packed_linears`); with `pack`, the bfloat16 linears to `packed_linear` on a packed copy that replaces
    their weight. Returns how many were rewritten."""
    pack = packed_linears() if pack is None else pack
    rewritten = _pack_bfloat16(gm) if pack else 0
    for i, linear in enumerate(constant_linears(gm)):
        name = f"_decode_layout_t{i}"  # generated here, never read from the artifact
        if linear.node.target is torch.ops.aten.linear.default:
            args = tuple(linear.node.args) + (None,) * (3 - len(linear.node.args))  # bias is optional in aten.linear
            if pack and (linear.bias is None or linear.bias.dim() == 1):
                setattr(gm, name, torch.nn.Parameter(_pack(linear.weight), requires_grad=False))
                with gm.graph.inserting_before(linear.node):
                    args = (*args, gm.graph.get_attr(name))
            replace_with_call(gm.graph, linear.node, decode_linear, args)
            rewritten += 1
            continue
        bias, x, weight = linear.node.args
        if linear.bias.dim() != 1:  # addmm always has a bias; a broadcast [1, out] one is left as it is
            continue
        copy = _pack(linear.weight) if pack else linear.weight.contiguous()
        setattr(gm, name, torch.nn.Parameter(copy, requires_grad=False))
        with gm.graph.inserting_before(linear.node):
            weight_t = gm.graph.get_attr(name)
        replace_with_call(gm.graph, linear.node, decode_conv1d, (x, weight, weight_t, bias))
        rewritten += 1
    gm.recompile()
    return rewritten


def _pack_bfloat16(gm: fx.GraphModule) -> int:
    """Every bfloat16 linear to `packed_linear` (one row too: bfloat16 has no faster unpacked one-row product here);
    the weights it replaces are freed, so the step holds one copy."""
    rewritten = 0
    for i, linear in enumerate(constant_linears(gm, dtypes=(torch.bfloat16,))):
        if linear.bias is not None and linear.bias.dim() != 1:
            continue
        node = linear.node
        bias = node.args[0] if node.target is torch.ops.aten.addmm.default else (list(node.args) + [None])[2]
        setattr(gm, f"_decode_layout_bf16_{i}", torch.nn.Parameter(_pack(linear.weight), requires_grad=False))
        with gm.graph.inserting_before(node):
            packed = gm.graph.get_attr(f"_decode_layout_bf16_{i}")
        replace_with_call(gm.graph, node, packed_linear, (linear.x, packed, bias))
        rewritten += 1
    if rewritten:
        drop_unused_attrs(gm)
    return rewritten


def _pack(weight: torch.Tensor) -> torch.Tensor:
    """An [out, in] weight in oneDNN's packed layout for a product with about PACK_ROWS rows."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), PACK_ROWS)
