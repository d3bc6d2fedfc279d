"""Beam search over the exported programs: transformers' `_beam_search`, item by item, finished items leave.

Each image keeps the same state HF keeps (running beams, finished hypotheses, the early-stopping
heuristic). Once an image can no longer change its finished hypotheses, HF keeps computing it until
the whole batch is done; here its rows are dropped instead. Its result is the same either way.
"""

from __future__ import annotations

import torch

from runtime.decode.state import Caches, DecodeSettings, Step, Trace, force, forced_token

NEG = -1.0e9


def beam_search(
    step: Step, cross_k: torch.Tensor, cross_v: torch.Tensor, settings: DecodeSettings, trace: Trace | None = None
) -> list[list[int]]:
    """Beam search with `settings.num_beams`; returns the best hypothesis' generated ids per image."""
    k, device = settings.num_beams, cross_k.device
    n = cross_k.shape[1]
    keep_k = 2 * k  # max(2, 1 + number of EOS ids) * num_beams, with one EOS id
    caches = Caches.empty(
        cross_k.repeat_interleave(k, dim=1), cross_v.repeat_interleave(k, dim=1), settings.max_new_tokens
    )
    running, running_scores, done_seqs, done_scores, done_lens, finished, improvable = initial(n, settings, device)
    top_mask = torch.arange(keep_k, device=device) < k
    items = list(range(n))
    results: dict[int, list[int]] = {}
    if trace is not None:
        trace.gaps, trace.top = [[] for _ in range(n)], [[] for _ in range(n)]
    cur = 1
    while items:
        position = torch.tensor([cur - 1], dtype=torch.long, device=device)
        logits, caches.self_k, caches.self_v = step(
            running[:, :, cur - 1].reshape(-1), position, caches.self_k, caches.self_v, caches.cross_k, caches.cross_v
        )
        m, at = len(items), At(cur, settings)
        state = running, running_scores, done_seqs, done_scores, done_lens, finished, improvable
        (running, running_scores, done_seqs, done_scores, done_lens, finished), parent, hits = advance(
            state, logits, at, settings, top_mask, trace=trace, items=items
        )

        cur += 1
        improvable, over = images_over(improvable, running_scores, done_scores, finished, hits, at, settings)
        flat_parent = (parent + torch.arange(m, device=device)[:, None] * k).reshape(-1)
        if bool(over.any()):
            for j in over.nonzero().flatten().tolist():
                results[items[j]] = done_seqs[j, 0, 1 : int(done_lens[j, 0])].tolist()
            stay = (~over).nonzero().flatten()
            items = [items[j] for j in stay.tolist()]
            if not items:
                break
            running, running_scores, done_seqs, done_scores, done_lens, finished, improvable = (
                t.index_select(0, stay)
                for t in (running, running_scores, done_seqs, done_scores, done_lens, finished, improvable)
            )
            rows = flat_parent.view(m, k).index_select(0, stay).reshape(-1)
            cross_rows = (stay[:, None] * k + torch.arange(k, device=device)[None, :]).reshape(-1)
            caches = Caches(
                caches.self_k.index_select(1, rows),
                caches.self_v.index_select(1, rows),
                caches.cross_k.index_select(1, cross_rows),
                caches.cross_v.index_select(1, cross_rows),
            )
        else:
            caches = caches.select(flat_parent, cross=False)
    return [results[i] for i in range(n)]


def initial(n: int, settings: DecodeSettings, device) -> tuple[torch.Tensor, ...]:
    """HF's starting beam state for `n` images: (running, running scores, finished hypotheses, their scores and
    lengths, which are finished, whether each image can still improve)."""
    k, max_len = settings.num_beams, settings.max_new_tokens + 1
    running = torch.full((n, k, max_len), settings.eos_token_id, dtype=torch.long, device=device)
    running[:, :, 0] = settings.start_token_id
    running_scores = torch.zeros((n, k), device=device)
    running_scores[:, 1:] = NEG
    return (
        running,
        running_scores,
        running.clone(),
        torch.full((n, k), NEG, device=device),
        torch.zeros((n, k), dtype=torch.long, device=device),
        torch.zeros((n, k), dtype=torch.bool, device=device),
        torch.ones((n, 1), dtype=torch.bool, device=device),
    )


class At:
    """Step `cur` of the eager loop, a Python int: what the bookkeeping derives from the step number, on the host.
    runtime.decode.cuda_graphs_beam.OnDevice answers the same from a tensor, for a captured tick."""

    def __init__(self, cur: int, settings: DecodeSettings):
        self.cur, self.settings = cur, settings

    def force(self, scores: torch.Tensor) -> torch.Tensor:
        return force(scores, forced_token(self.settings, self.cur - 1))

    def write(self, seqs: torch.Tensor, tokens: torch.Tensor) -> None:
        seqs[:, :, self.cur] = tokens

    def last(self) -> bool:
        """Whether this step reaches HF's max_length (which counts the start token)."""
        return self.cur + 1 >= self.settings.max_new_tokens + 1

    def lengths(self, like: torch.Tensor) -> torch.Tensor:
        """A finished hypothesis' length at this step (the start token counted), shaped like `like`."""
        return torch.full_like(like, self.cur + 1)

    def per_length(self, scores: torch.Tensor) -> torch.Tensor:
        """`scores` divided by the length penalty's divisor at this step, `cur ** length_penalty` as a float32 tensor
        on their device: on the CPU the bits of HF's division by that Python float; on CUDA, where torch multiplies by
        a Python float's reciprocal instead (div_true_kernel_cuda), a true division, as the captured tick divides
        (runtime.decode.cuda_graphs_beam.OnDevice), so the two loops agree bit for bit on every device."""
        return scores / torch.tensor(float(self.cur**self.settings.length_penalty), device=scores.device)


def advance(
    state: tuple,
    logits: torch.Tensor,
    at: At,
    settings: DecodeSettings,
    top_mask: torch.Tensor,
    trace: Trace | None = None,
    items: list[int] | None = None,
):
    """One step of HF's beam bookkeeping on the step's `logits` at step `at` (an At, or anything that answers as
    one): ((running, running scores, finished hypotheses, their scores, lengths, finished flags), each kept beam's
    parent, which top candidates hit EOS). No host read: a captured tick runs it too."""
    running, running_scores, done_seqs, done_scores, done_lens, finished, improvable = state
    k, keep_k = settings.num_beams, top_mask.shape[0]
    m, vocab = running.shape[0], logits.shape[-1]
    # HF applies its logits processors after the log-softmax: a forced token adds 0 to the beam's score
    scores = at.force(torch.log_softmax(logits.float(), dim=-1))
    scores = scores.view(m, k, vocab) + running_scores[:, :, None]
    scores = scores.reshape(m, k * vocab)
    top_scores, top_index = torch.topk(scores, keep_k)
    if trace is not None:
        _trace_beams(trace, scores, keep_k, vocab, items)
    src = top_index // vocab
    tokens = top_index % vocab
    top_seqs = torch.take_along_dim(running, src[:, :, None], dim=1)
    at.write(top_seqs, tokens)
    hits = (tokens == settings.eos_token_id) | at.last()

    live_scores = top_scores + hits.float() * NEG
    nxt = torch.topk(live_scores, k)[1]
    running = torch.take_along_dim(top_seqs, nxt[:, :, None], dim=1)
    running_scores = torch.take_along_dim(live_scores, nxt, dim=1)
    parent = torch.take_along_dim(src, nxt, dim=1)

    just_done = hits & top_mask[None, :]
    cand = at.per_length(top_scores)
    full = finished.all(dim=-1, keepdim=True) & (settings.early_stopping is True)
    cand = cand + full.float() * NEG + (~improvable).float() * NEG + (~just_done).float() * NEG
    cand_lens = at.lengths(done_lens[:, :1]).expand(m, keep_k)
    merged = torch.topk(torch.cat((done_scores, cand), dim=1), k)[1]
    done_seqs = torch.take_along_dim(torch.cat((done_seqs, top_seqs), dim=1), merged[:, :, None], dim=1)
    done_scores = torch.take_along_dim(torch.cat((done_scores, cand), dim=1), merged, dim=1)
    done_lens = torch.take_along_dim(torch.cat((done_lens, cand_lens), dim=1), merged, dim=1)
    finished = torch.take_along_dim(torch.cat((finished, just_done), dim=1), merged, dim=1)
    return (running, running_scores, done_seqs, done_scores, done_lens, finished), parent, hits


def images_over(improvable, running_scores, done_scores, finished, hits, at: At, settings: DecodeSettings):
    """(whether each image can still improve after step `at`, which images are over): an image is over where it can
    no longer improve, where every top candidate ended (EOS or max_length), or, with early_stopping True, where all
    its finished hypotheses are in. Both loops end an image here: the eager one drops it, a bucket masks it."""
    improvable = improvable & can_improve(running_scores, done_scores, finished, at, settings)
    over = ~improvable[:, 0] | hits.all(dim=-1)
    if settings.early_stopping is True:
        over = over | finished.all(dim=-1)
    return improvable, over


def can_improve(running_scores, done_scores, finished, at: At, settings: DecodeSettings) -> torch.Tensor:
    """HF's `_check_early_stop_heuristic` (prompt length 1) after step `at`: whether an image's best running beam
    can still beat its worst finished hypothesis."""
    if settings.early_stopping == "never" and settings.length_penalty > 0.0:
        best_running = running_scores[:, :1] / (settings.max_new_tokens**settings.length_penalty)
    else:
        best_running = at.per_length(running_scores[:, :1])
    worst_done = torch.where(finished, done_scores.min(dim=1, keepdim=True)[0], NEG)
    return (best_running > worst_done).any(dim=-1, keepdim=True)


def _trace_beams(trace: Trace, scores: torch.Tensor, keep_k: int, vocab: int, items: list[int]) -> None:
    values, index = torch.topk(scores, keep_k + 1)
    for j, item in enumerate(items):
        gaps = torch.nan_to_num(values[j, :-1] - values[j, 1:], nan=float("inf")).min()  # -inf - -inf: forced step
        trace.gaps[item].append(float(gaps))
        trace.top[item].append([(int(index[j, c] % vocab), float(values[j, c])) for c in range(keep_k + 1)])
