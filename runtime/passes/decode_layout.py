"""CPU decode layout: the decoder step's linears computed as weight @ x.T when a step has several rows.

A decode step multiplies a handful of rows (batch x beams) by every weight matrix. For 8-32 rows,
MKL's `x @ W.T` was up to 2.3x slower than `(W @ x.T).T` on the same [out, in] weight, which
streams the weight once (GPT-2's 50257 x 768 head at 8 rows: 89 -> 38 ms on this project's 2-core
AVX2 CPU). One row keeps `F.linear` itself (its matrix-vector path is already right), so batch-1
results are bit-identical. GPT-2's Conv1D layers ([in, out] weights, addmm) are left alone: their
[out, in] copy measured 5% slower at one row. With several rows the sums run in another order, so
logits can differ in the last bits (about 1e-4).
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
