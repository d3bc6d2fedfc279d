"""Size every intermediate of a checked program on the meta device (nothing is allocated): `make upload`'s check."""

from __future__ import annotations

import torch
from torch import fx

from runtime.artifact.graphs import Program, fail, on_device


def peak_bytes(program: Program, inputs: list[torch.Tensor], limit: int) -> tuple:
    """Run `program` on meta `inputs` (sizes only); raises BadDescription when the tensors alive at once would
    take over `limit` bytes. Returns the outputs (meta tensors) and the peak."""
    graph = on_device(program.graph, torch.device("meta"))
    for node in graph.nodes:  # meta kernels may pick other strides than the real ones; sizes are the same
        if node.target is torch.ops.aten.view.default:
            node.target = torch.ops.aten.reshape.default
    last_use: dict[fx.Node, fx.Node] = {}
    for node in reversed(graph.nodes):
        for used in node.all_input_nodes:
            last_use.setdefault(used, node)
    env: dict[fx.Node, object] = {}
    owned: dict[fx.Node, int] = {}
    feed, live, peak = iter(inputs), 0, 0
    for node in graph.nodes:
        if node.op == "placeholder":
            env[node] = next(feed)
        elif node.op == "get_attr":
            w = program.weights[node.target]
            env[node] = torch.empty_strided(w.size, w.stride, dtype=w.dtype, device="meta")
        elif node.op == "call_function":
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: env[n])
            try:
                env[node] = node.target(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any op that cannot size its result makes the program unusable
                fail(
                    f"node {node.name}",
                    f"{node.target} fails on inputs of these sizes ({type(exc).__name__}: {str(exc)[:160]})",
                )
            made = sum(t.untyped_storage().nbytes() for t in _tensors(env[node]) if not t._is_view())
            owned[node], live = made, live + made
            peak = max(peak, live)
            if made > limit or live > limit:
                fail(f"node {node.name}", f"{node.target} needs {live} bytes alive at once, over this device's {limit}")
        else:
            return fx.node.map_arg(node.args[0], lambda n: env[n]), peak
        for used in node.all_input_nodes:
            if last_use.get(used) is node:
                live -= owned.pop(used, 0)
                env.pop(used, None)
    fail("graph", "has no output")


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
