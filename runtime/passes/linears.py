"""Find the linear layers with constant weights in a loaded program's graph, and free weights no longer read."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from runtime.artifact.graphs import attr


@dataclass
class Linear:
    """One linear-shaped node: `x @ weight.T + bias` (aten.linear) or `bias + x @ weight` (GPT-2's Conv1D addmm)."""

    node: fx.Node
    x: fx.Node
    weight: torch.Tensor  # always [out, in] here (a transposed view for addmm)
    bias: torch.Tensor | None
    weight_target: str


def constant_linears(gm: fx.GraphModule, dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> list[Linear]:
    """Every 2-D linear of one of `dtypes` whose weight (and bias) are the program's own parameters."""
    found = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is torch.ops.aten.linear.default:
            x, weight, bias = node.args[0], node.args[1], node.args[2] if len(node.args) > 2 else None
            transposed = False
        elif node.target is torch.ops.aten.addmm.default and not node.kwargs and len(node.args) == 3:
            bias, x, weight = node.args
            transposed = True
        else:
            continue
        if not (isinstance(weight, fx.Node) and weight.op == "get_attr"):
            continue
        if bias is not None and not (isinstance(bias, fx.Node) and bias.op == "get_attr"):
            continue
        tensor = attr(gm, weight.target)
        if tensor.dim() != 2 or tensor.dtype not in dtypes:
            continue
        tensor = tensor.detach()
        found.append(
            Linear(
                node,
                x,
                tensor.t() if transposed else tensor,
                attr(gm, bias.target).detach() if bias is not None else None,
                weight.target,
            )
        )
    return found


def replace_with_call(graph: fx.Graph, node: fx.Node, target, args: tuple) -> fx.Node:
    """Put `target(*args)` where `node` was: same place, same metadata, every user moved to it."""
    with graph.inserting_before(node):
        new = graph.call_function(target, args)
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    return new


def drop_unused_attrs(gm: fx.GraphModule) -> None:
    """Erase get_attr nodes nobody reads and free their tensors (a weight another node still reads stays)."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:
            target = node.target
            graph.erase_node(node)
            if not any(n.op == "get_attr" and n.target == target for n in graph.nodes):
                *owner, name = target.split(".")
                delattr(attr(gm, ".".join(owner)) if owner else gm, name)
    gm.recompile()
