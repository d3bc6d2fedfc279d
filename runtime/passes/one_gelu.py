"""GPT-2's tanh GELU, exported as eight elementwise ops, made the one `aten.gelu(approximate="tanh")` it computes."""

from __future__ import annotations

import math

import torch
from torch import fx

aten = torch.ops.aten
# 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3))), as transformers' NewGELUActivation exports it
HALF, CUBE, COEFF, SQRT_2_OVER_PI, ONE = 0.5, 3.0, 0.044715, math.sqrt(2.0 / math.pi), 1.0
# dtypes where the fused kernel equals the composed ops to the last bit or so: float32 differs in about 1% of the
# outputs by one ulp; in bfloat16 the fused kernel computes in float32 inside, so 40% of outputs round differently
# from HF's composed bfloat16 ops, which would move parity with HF: left composed there
DTYPES = (torch.float32,)


def _call(node, target) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target == target


def _scalar(node: fx.Node, target, value: float):
    """The tensor operand of `node` if it is `target(tensor, value)` (either order for mul/add), else None."""
    if not _call(node, target) or len(node.args) != 2:
        return None
    a, b = node.args
    if isinstance(b, (int, float)) and math.isclose(b, value, rel_tol=1e-9):
        return a
    if (
        target in (aten.mul.Tensor, aten.add.Tensor)
        and isinstance(a, (int, float))
        and math.isclose(a, value, rel_tol=1e-9)
    ):
        return b
    return None


def _gelu_input(out: fx.Node):
    """x when `out` is the tanh GELU of x written out (mul(mul(x, .5), add(tanh(..), 1))), else None."""
    if not _call(out, aten.mul.Tensor) or len(out.args) != 2:
        return None
    for half_node, tail in (out.args, out.args[::-1]):
        x = _scalar(half_node, aten.mul.Tensor, HALF)
        tanh = _scalar(tail, aten.add.Tensor, ONE)
        if x is None or not _call(tanh, aten.tanh.default) or len(tanh.args) != 1:
            continue
        inner = _scalar(tanh.args[0], aten.mul.Tensor, SQRT_2_OVER_PI)
        if not _call(inner, aten.add.Tensor) or len(inner.args) != 2:
            continue
        for x2, cubed in (inner.args, inner.args[::-1]):
            power = _scalar(cubed, aten.mul.Tensor, COEFF)
            if x2 is x and power is not None and _scalar(power, aten.pow.Tensor_Scalar, CUBE) is x:
                return x
    return None


def _erase_unused(graph: fx.Graph, node: fx.Node, keep: fx.Node) -> None:
    """Erase `node` and, walking back through its operands, every op of the pattern left without a user."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n is keep or n.users or n.op != "call_function":
            continue
        operands = [a for a in n.args if isinstance(a, fx.Node)]
        graph.erase_node(n)
        stack.extend(operands)


def apply_one_gelu(gm: fx.GraphModule, dtype: torch.dtype) -> int:
    """Replace every written-out tanh GELU in `gm` by one `aten.gelu(x, approximate="tanh")` when the model runs in
    a dtype of DTYPES; the pattern's ops left without a user are removed. Returns how many were replaced (0: the
    graph is unchanged)."""
    if dtype not in DTYPES:
        return 0
    graph, done = gm.graph, 0
    for node in list(graph.nodes):
        x = _gelu_input(node)
        if x is None:
            continue
        with graph.inserting_after(node):
            fused = graph.call_function(aten.gelu.default, (x,), {"approximate": "tanh"})
        fused.meta = dict(node.meta)
        node.replace_all_uses_with(fused)
        _erase_unused(graph, node, keep=x)
        done += 1
    if done:
        graph.lint()
        gm.recompile()
    return done
