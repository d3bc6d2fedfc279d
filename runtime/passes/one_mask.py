"""The decoder step's boolean attention mask made a float mask once per step, not inside every attention call."""

from __future__ import annotations

import torch
from torch import fx

aten = torch.ops.aten
SDPA = aten.scaled_dot_product_attention.default
# ops whose result is boolean whatever their inputs: a mask built from one of them (then reshaped) is boolean
COMPARISONS = {
    aten.le.Tensor,
    aten.lt.Tensor,
    aten.ge.Tensor,
    aten.gt.Tensor,
    aten.eq.Tensor,
    aten.ne.Tensor,
    aten.le.Scalar,
    aten.lt.Scalar,
    aten.ge.Scalar,
    aten.gt.Scalar,
    aten.eq.Scalar,
    aten.ne.Scalar,
    aten.logical_and.default,
    aten.logical_or.default,
    aten.logical_not.default,
}
RESHAPES = {aten.view.default, aten.reshape.default, aten.unsqueeze.default, aten.expand.default}


def _is_bool(node) -> bool:
    while isinstance(node, fx.Node) and node.op == "call_function" and node.target in RESHAPES:
        node = node.args[0]
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in COMPARISONS


def _mask(node: fx.Node):
    return node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")


def apply_one_mask(gm: fx.GraphModule, dtype: torch.dtype) -> int:
    """Give every attention call whose mask is boolean one float mask (0 where attended, -inf elsewhere, in `dtype`,
    the queries' dtype) made once right after the boolean one: what scaled_dot_product_attention computes from a
    boolean mask on each call. Returns how many attention calls now share a float mask (0: the graph is unchanged)."""
    graph, floats, done = gm.graph, {}, 0
    for node in list(graph.nodes):
        if not (node.op == "call_function" and node.target is SDPA):
            continue
        mask = _mask(node)
        if not _is_bool(mask):
            continue
        if mask not in floats:
            with graph.inserting_after(mask):
                hidden = graph.call_function(aten.logical_not.default, (mask,))
            with graph.inserting_after(hidden):
                zeros = graph.call_function(aten.zeros_like.default, (mask,), {"dtype": dtype})
            with graph.inserting_after(zeros):
                floats[mask] = graph.call_function(aten.masked_fill.Scalar, (zeros, hidden, float("-inf")))
        if len(node.args) > 3:
            node.args = (*node.args[:3], floats[mask], *node.args[4:])
        else:
            node.kwargs = {**node.kwargs, "attn_mask": floats[mask]}
        done += 1
    if done:
        graph.lint()
        gm.recompile()
    return done
