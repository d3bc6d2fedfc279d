"""CPU decode layout: the decoder step's linears computed as weight @ x.T when a step has several rows.

A decode step multiplies a handful of rows (batch x beams) by every weight matrix; `(W @ x.T).T` streams the
[out, in] weight once where MKL's `x @ W.T` does not (BENCHMARKS.md, "Decode layout"). One row keeps `F.linear`
(its matrix-vector path is already right), so batch-1 results are bit-identical. GPT-2's Conv1D layers ([in, out]
weights, addmm) keep their own weight for one row, where `x @ W` on it is the fastest form, and gain an [out, in]
copy for several rows, where MKL's `x @ W` was 1.3-2.5x slower than `(W.T @ x.T).T` on a contiguous copy: the
copy costs the memory of those weights once more (340 MB for GPT-2 small), measured worth it in BENCHMARKS.md.
With several rows the sums run in another order: logits may differ in the last bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx

from runtime.passes.linears import constant_linears, replace_with_call


def decode_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, computed as `(weight @ x.T).T` when x has several rows."""
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] == 1:
        return F.linear(x, weight, bias)
    out = torch.mm(weight, flat.t()) if bias is None else torch.addmm(bias[:, None], weight, flat.t())
    return out.t().reshape(*x.shape[:-1], weight.shape[0])


def decode_conv1d(x: torch.Tensor, weight: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GPT-2's Conv1D `addmm(bias, x, weight)` ([in, out] weight, 2-D x): as is for one row, else
    `(weight_t @ x.T).T` on the contiguous [out, in] copy `weight_t`."""
    if x.shape[0] == 1:
        return torch.addmm(bias, x, weight)
    return torch.addmm(bias[:, None], weight_t, x.t()).t()


def apply_decode_layout(gm: fx.GraphModule) -> int:
    """Rewrite the float32 linears of a decoder-step program: `aten.linear` to `decode_linear`, GPT-2's Conv1D
    `addmm` to `decode_conv1d` with an [out, in] copy of its weight; returns how many were rewritten."""
    rewritten = 0
    for i, linear in enumerate(constant_linears(gm)):
        if linear.node.target is torch.ops.aten.linear.default:
            args = tuple(linear.node.args) + (None,) * (3 - len(linear.node.args))  # bias is optional in aten.linear
            replace_with_call(gm.graph, linear.node, decode_linear, args)
            rewritten += 1
            continue
        bias, x, weight = linear.node.args
        if linear.bias.dim() != 1:  # addmm always has a bias; a broadcast [1, out] one is left as it is
            continue
        name = f"_decode_layout_t{i}"  # generated here, never read from the artifact
        setattr(gm, name, torch.nn.Parameter(linear.weight.contiguous(), requires_grad=False))
        with gm.graph.inserting_before(linear.node):
            weight_t = gm.graph.get_attr(name)
        replace_with_call(gm.graph, linear.node, decode_conv1d, (x, weight, weight_t, bias))
        rewritten += 1
    gm.recompile()
    return rewritten
