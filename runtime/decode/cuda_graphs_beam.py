"""Beam search on a static bucket: runtime.decode.beam's bookkeeping, finished images masked instead of dropped.

The captured tick runs the step (its caches reordered by each row's parent beam first); the bookkeeping between
ticks is runtime.decode.beam's own arithmetic, on the device with the same Python scalars, so the scores match it bit
for bit. An image is finished where runtime.decode.beam drops it; its best hypothesis is kept at that step on the
device, and the host asks whether every image is finished once every `eos_every` steps.
"""

from __future__ import annotations

import torch

from runtime.decode.beam import _can_improve, advance, initial


def beam_search_static(bucket, n: int, eos_every: int) -> list[list[int]]:
    """Beam search over a loaded runtime.decode.cuda_graphs.Bucket's first `n` images; ids per image as
    runtime.decode.beam.beam_search returns them."""
    s, device = bucket.settings, bucket.device
    k, m = s.num_beams, bucket.items
    max_len = s.max_new_tokens + 1
    keep_k = 2 * k
    running, running_scores, done_seqs, done_scores, done_lens, finished, improvable = initial(m, s, device)
    top_mask = torch.arange(keep_k, device=device) < k
    offsets = torch.arange(m, device=device)[:, None] * k
    gone = torch.arange(m, device=device) >= n  # padding images are finished from the start
    best_seqs, best_lens = done_seqs[:, 0].clone(), done_lens[:, 0].clone()
    for cur in range(1, max_len):
        bucket.tokens.copy_(running[:, :, cur - 1].reshape(-1))
        bucket.position.fill_(cur - 1)
        bucket.tick()
        state = running, running_scores, done_seqs, done_scores, done_lens, finished, improvable
        (running, running_scores, done_seqs, done_scores, done_lens, finished), parent, hits = advance(
            state, bucket.logits, cur, s, top_mask
        )

        improvable = improvable & _can_improve(running_scores, done_scores, finished, cur + 1, max_len, s)
        over = ~improvable[:, 0] | hits.all(dim=-1)
        if s.early_stopping is True:
            over |= finished.all(dim=-1)
        newly = over & ~gone
        best_seqs = torch.where(newly[:, None], done_seqs[:, 0], best_seqs)
        best_lens = torch.where(newly, done_lens[:, 0], best_lens)
        gone = gone | over
        bucket.parent.copy_((parent + offsets).reshape(-1))
        if cur % eos_every == 0 and bool(gone.all()):
            break
    return [seq[1:length] for seq, length in zip(best_seqs[:n].tolist(), best_lens[:n].tolist())]
