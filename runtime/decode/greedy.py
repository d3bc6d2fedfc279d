"""Greedy decoding over a decoder-step program, in plain torch: a row that emitted EOS leaves the batch.

A finished row is dropped from every tensor, so it stops costing compute (the CUDA-graph decode masks it instead:
runtime.decode.cuda_graphs).
"""

from __future__ import annotations

import torch

from runtime.decode.state import Caches, DecodeSettings, Step, Trace, force, forced_token


def greedy(
    step: Step, cross_k: torch.Tensor, cross_v: torch.Tensor, settings: DecodeSettings, trace: Trace | None = None
) -> list[list[int]]:
    """Greedy decoding; returns the generated token ids of each image (EOS included when emitted)."""
    rows = cross_k.shape[1]
    device = cross_k.device
    caches = Caches.empty(cross_k, cross_v, settings.max_new_tokens)
    tokens = torch.full((rows,), settings.start_token_id, dtype=torch.long, device=device)
    alive = list(range(rows))
    out: list[list[int]] = [[] for _ in range(rows)]
    if trace is not None:
        trace.gaps = [[] for _ in range(rows)]
        trace.top = [[] for _ in range(rows)]
    for t in range(settings.max_new_tokens):
        position = torch.tensor([t], dtype=torch.long, device=device)
        logits, caches.self_k, caches.self_v = step(
            tokens, position, caches.self_k, caches.self_v, caches.cross_k, caches.cross_v
        )
        logits = force(logits, forced_token(settings, t))
        nxt = logits.argmax(dim=-1)
        if trace is not None:
            _trace_greedy(trace, logits, alive)
        ids = nxt.tolist()
        keep = []
        for j, (row, tok) in enumerate(zip(alive, ids)):
            out[row].append(tok)
            if tok != settings.eos_token_id:
                keep.append(j)
        if not keep:
            break
        if len(keep) < len(alive):
            index = torch.tensor(keep, dtype=torch.long, device=device)
            caches = caches.select(index)
            nxt = nxt.index_select(0, index)
            alive = [alive[j] for j in keep]
        tokens = nxt
    return out


def _trace_greedy(trace: Trace, logits: torch.Tensor, alive: list[int]) -> None:
    values, indices = logits.float().topk(2, dim=-1)
    for j, row in enumerate(alive):
        trace.gaps[row].append(float(values[j, 0] - values[j, 1]))
        trace.top[row].append([(int(indices[j, k]), float(values[j, k])) for k in range(2)])
