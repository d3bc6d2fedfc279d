"""Beam search on a static bucket: runtime.beam's bookkeeping, with finished images masked instead of dropped.

The captured tick runs the step (its caches reordered by each row's parent beam first); the bookkeeping between
ticks is runtime.beam's own arithmetic, on the device with the same Python scalars, so the scores match it bit
for bit. An image is finished where runtime.beam drops it; its best hypothesis is kept at that step on the
device, and the host asks whether every image is finished once every `eos_every` steps.
"""
from __future__ import annotations

import torch

from runtime.decode.beam import NEG, _can_improve
from runtime.decode import force, forced_token


def beam_search_static(bucket, n: int, eos_every: int) -> list[list[int]]:
    """Beam search over a loaded runtime.static_decode.Bucket's first `n` images; ids per image as
    runtime.beam.beam_search returns them."""
    s, device = bucket.settings, bucket.device
    k, m = s.num_beams, bucket.items
    max_len = s.max_new_tokens + 1
    keep_k = 2 * k
    running = torch.full((m, k, max_len), s.eos_token_id, dtype=torch.long, device=device)
    running[:, :, 0] = s.start_token_id
    running_scores = torch.zeros((m, k), device=device)
    running_scores[:, 1:] = NEG
    done_seqs = running.clone()
    done_scores = torch.full((m, k), NEG, device=device)
    done_lens = torch.zeros((m, k), dtype=torch.long, device=device)
    finished = torch.zeros((m, k), dtype=torch.bool, device=device)
    improvable = torch.ones((m, 1), dtype=torch.bool, device=device)
    top_mask = torch.arange(keep_k, device=device) < k
    offsets = torch.arange(m, device=device)[:, None] * k
    gone = torch.arange(m, device=device) >= n  # padding images are finished from the start
    best_seqs, best_lens = done_seqs[:, 0].clone(), done_lens[:, 0].clone()
    for cur in range(1, max_len):
        bucket.tokens.copy_(running[:, :, cur - 1].reshape(-1))
        bucket.position.fill_(cur - 1)
        bucket.tick()
        vocab = bucket.logits.shape[-1]
        scores = force(torch.log_softmax(bucket.logits.float(), dim=-1), forced_token(s, cur - 1))
        scores = (scores.view(m, k, vocab) + running_scores[:, :, None]).reshape(m, k * vocab)
        top_scores, top_index = torch.topk(scores, keep_k)
        src = top_index // vocab
        top_seqs = torch.take_along_dim(running, src[:, :, None], dim=1)
        top_seqs[:, :, cur] = top_index % vocab
        hits = (top_seqs[:, :, cur] == s.eos_token_id) | (cur + 1 >= max_len)

        live_scores = top_scores + hits.float() * NEG
        nxt = torch.topk(live_scores, k)[1]
        running = torch.take_along_dim(top_seqs, nxt[:, :, None], dim=1)
        running_scores = torch.take_along_dim(live_scores, nxt, dim=1)
        parent = torch.take_along_dim(src, nxt, dim=1)

        just_done = hits & top_mask[None, :]
        cand = top_scores / ((cur + 1 - 1) ** s.length_penalty)
        full = finished.all(dim=-1, keepdim=True) & (s.early_stopping is True)
        cand = cand + full.float() * NEG + (~improvable).float() * NEG + (~just_done).float() * NEG
        cand_lens = torch.full_like(done_lens[:, :1], cur + 1).expand(m, keep_k)
        merged = torch.topk(torch.cat((done_scores, cand), dim=1), k)[1]
        done_seqs = torch.take_along_dim(torch.cat((done_seqs, top_seqs), dim=1), merged[:, :, None], dim=1)
        done_scores = torch.take_along_dim(torch.cat((done_scores, cand), dim=1), merged, dim=1)
        done_lens = torch.take_along_dim(torch.cat((done_lens, cand_lens), dim=1), merged, dim=1)
        finished = torch.take_along_dim(torch.cat((finished, just_done), dim=1), merged, dim=1)

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
