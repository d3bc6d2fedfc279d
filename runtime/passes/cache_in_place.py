"""The decoder step writes its self-attention caches in place instead of returning new ones (CPU and CUDA).

Every family's step writes the new key and value of each layer with `cache[layer].index_copy(2, position, new)`
(export/wrap_common.py) and returns `torch.stack` of the layers: each step copies the whole cache twice (once per
layer in `index_copy`, once more in `stack`), for every row, over the cache's full length. Here the writes become
`index_copy_` into the caller's cache and the step returns that cache itself, so a step copies one position per
row. The numbers are the same (only where they are stored changes); the step now writes into the `self_k` and
`self_v` it is given, which every caller in runtime.decode already treats as consumed (each replaces its caches with
what the step returns). Applied only when the graph is exactly that shape, and nothing else reads the caches; any
other graph is left alone (Qwen-VL's step, which concatenates each layer's cache again for its attended keys).
"""

from __future__ import annotations

import torch
from torch import fx

SELF_K, SELF_V = 2, 3  # the step's inputs: tokens, position, self_k, self_v, cross_k, cross_v
OUT_K, OUT_V = 1, 2  # its outputs: logits, self_k, self_v


def _layer_writes(stack: fx.Node, cache: fx.Node) -> list[fx.Node] | None:
    """The `index_copy(select(cache, 0, i), ...)` nodes stacked into `stack`, layer i at place i, if that is what
    `stack` is and nothing else reads `cache` or its layers; else None."""
    if not (stack.op == "call_function" and stack.target is torch.ops.aten.stack.default and not stack.kwargs):
        return None
    if len(stack.args) > 1 and stack.args[1] != 0:
        return None
    writes = list(stack.args[0])
    for i, write in enumerate(writes):
        if not (
            isinstance(write, fx.Node)
            and write.target is torch.ops.aten.index_copy.default
            and not write.kwargs
            and len(write.args) == 4
        ):
            return None
        layer = write.args[0]
        if not (
            isinstance(layer, fx.Node)
            and layer.target is torch.ops.aten.select.int
            and not layer.kwargs
            and tuple(layer.args) == (cache, 0, i)
            and set(layer.users) == {write}
        ):
            return None
    if set(cache.users) != {write.args[0] for write in writes}:
        return None
    return writes


def apply_cache_in_place(gm: fx.GraphModule) -> bool:
    """Rewrite a decoder-step program to write its caches in place (see the module docstring); True if done."""
    graph = gm.graph
    inputs = [node for node in graph.nodes if node.op == "placeholder"]
    output = next(node for node in graph.nodes if node.op == "output")
    results = output.args[0]
    if len(inputs) != 6 or not isinstance(results, (tuple, list)) or len(results) != 3:
        return False
    plan = [
        (results[out], inputs[cache], _layer_writes(results[out], inputs[cache]))
        for out, cache in ((OUT_K, SELF_K), (OUT_V, SELF_V))
    ]
    if any(writes is None for _, _, writes in plan):
        return False
    new_results = list(results)
    for (_, cache, writes), out in zip(plan, (OUT_K, OUT_V)):
        for write in writes:
            write.target = torch.ops.aten.index_copy_.default
        new_results[out] = cache
    output.args = (tuple(new_results),)
    for stack, _, _ in plan:
        graph.erase_node(stack)
    graph.lint()
    gm.recompile()
    return True
