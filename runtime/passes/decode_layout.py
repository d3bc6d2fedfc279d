"""CPU decode layout: the decoder step's linears computed as weight @ x.T when a step has several rows.

A decode step multiplies a handful of rows (batch x beams) by every weight matrix; `(W @ x.T).T` streams the
[out, in] weight once where MKL's `x @ W.T` does not (BENCHMARKS.md, "Decode layout"). One row keeps `F.linear`
(its matrix-vector path is already right), so batch-1 results are bit-identical; GPT-2's Conv1D layers ([in, out]
weights, addmm) are left alone. With several rows the sums run in another order: logits may differ in the last bits.
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


def apply_decode_layout(gm: fx.GraphModule) -> int:
    """Rewrite the float32 `aten.linear` nodes of a decoder-step program to `decode_linear`; returns how many."""
    linears = [l for l in constant_linears(gm) if l.node.target is torch.ops.aten.linear.default]
    for linear in linears:
        args = tuple(linear.node.args) + (None,) * (3 - len(linear.node.args))  # bias is optional in aten.linear
        replace_with_call(gm.graph, linear.node, decode_linear, args)
    gm.recompile()
    return len(linears)
