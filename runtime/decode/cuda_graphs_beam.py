"""Beam search on a static bucket, its bookkeeping inside the captured tick: runtime.decode.beam's arithmetic on
static buffers, finished images masked instead of dropped.

A tick runs the step (its caches reordered by each row's parent beam first), then runtime.decode.beam.advance and
images_over on the bucket's buffers, with the step number read from the bucket's position tensor (OnDevice) instead
of a Python int (At), and writes the next tokens, parents and position itself: nothing between two ticks runs on
the host, and the host asks whether every image is finished once every `eos_every` steps. An image is finished
where runtime.decode.beam drops it; its best hypothesis is kept at that step on the device.

The scores match runtime.decode.beam bit for bit on the same device: what the eager loop computes from the step
number in Python (the forced token, the length penalty's divisor `cur ** length_penalty`) is tabulated once per
bucket, and both loops divide by the divisor as a float32 tensor.
"""

from __future__ import annotations

import torch

from runtime.decode.beam import advance, images_over, initial
from runtime.decode.state import DecodeSettings, forced_token


class OnDevice:
    """The step number as a captured tick sees it: `cur` is the bucket's position + 1, a device tensor, and what
    runtime.decode.beam.At derives from a Python int comes from per-step tables made here once."""

    def __init__(self, settings: DecodeSettings, device: torch.device):
        self.settings, steps = settings, settings.max_new_tokens + 1
        forced = [forced_token(settings, cur - 1) for cur in range(steps)]
        self.forced = (
            None
            if all(token is None for token in forced[1:])
            else torch.tensor([-1 if t is None else t for t in forced], dtype=torch.long, device=device)
        )
        # index cur: float32(cur ** length_penalty), as runtime.decode.beam.At divides (index 0 unused)
        divisor = [1.0] + [float(cur**settings.length_penalty) for cur in range(1, steps)]
        self.divisor = torch.tensor(divisor, dtype=torch.float32, device=device)
        self.cur = torch.ones(1, dtype=torch.long, device=device)

    def at(self, position: torch.Tensor) -> OnDevice:
        """This tick's step: cur = position + 1."""
        self.cur = position + 1
        return self

    def force(self, scores: torch.Tensor) -> torch.Tensor:
        if self.forced is None:
            return scores
        token = self.forced.index_select(0, self.cur)  # -1: nothing forced at this step
        only = torch.where(torch.arange(scores.shape[-1], device=scores.device) == token, 0.0, float("-inf"))
        return torch.where(token >= 0, only, scores)

    def write(self, seqs: torch.Tensor, tokens: torch.Tensor) -> None:
        seqs.index_copy_(2, self.cur, tokens[:, :, None])

    def last(self) -> torch.Tensor:
        return self.cur + 1 >= self.settings.max_new_tokens + 1

    def lengths(self, like: torch.Tensor) -> torch.Tensor:
        return (self.cur + 1).expand(like.shape)

    def per_length(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.divisor.index_select(0, self.cur)


class BeamBuffers:
    """A bucket's beam state (runtime.decode.beam.initial's tensors, which images are finished, each image's best
    hypothesis) in static tensors that the captured tick updates in place."""

    def __init__(self, items: int, settings: DecodeSettings, device: torch.device):
        self.settings, self.items, self.device = settings, items, device
        self.state = initial(items, settings, device)  # running, scores, done seqs, scores, lens, finished, improvable
        self.top_mask = torch.arange(2 * settings.num_beams, device=device) < settings.num_beams
        self.offsets = torch.arange(items, device=device)[:, None] * settings.num_beams
        self.gone = torch.ones(items, dtype=torch.bool, device=device)
        self.best_seqs, self.best_lens = self.state[2][:, 0].clone(), self.state[4][:, 0].clone()
        self.step_number = OnDevice(settings, device)

    def start(self, n: int) -> None:
        """A new batch of `n` images: HF's starting state, padding images finished from the start."""
        for static, new in zip(self.state, initial(self.items, self.settings, self.device)):
            static.copy_(new)
        self.gone.copy_(torch.arange(self.items, device=self.device) >= n)
        self.best_seqs.copy_(self.state[2][:, 0])
        self.best_lens.zero_()

    def advance(self, logits: torch.Tensor, position: torch.Tensor, tokens: torch.Tensor, parent: torch.Tensor) -> None:
        """One step's bookkeeping on the step's `logits`, in place: the state, then the next step's `tokens` and
        `parent` rows (flat, images x beams) and `position`."""
        s, at = self.settings, self.step_number.at(position)
        (running, running_scores, done_seqs, done_scores, done_lens, finished), parents, hits = advance(
            self.state, logits, at, s, self.top_mask
        )
        improvable, over = images_over(self.state[6], running_scores, done_scores, finished, hits, at, s)
        newly = over & ~self.gone
        self.best_seqs.copy_(torch.where(newly[:, None], done_seqs[:, 0], self.best_seqs))
        self.best_lens.copy_(torch.where(newly, done_lens[:, 0], self.best_lens))
        self.gone |= over
        for static, new in zip(
            self.state, (running, running_scores, done_seqs, done_scores, done_lens, finished, improvable)
        ):
            static.copy_(new)
        parent.copy_((parents + self.offsets).reshape(-1))
        tokens.copy_(running.index_select(2, at.cur).reshape(-1))
        position += 1

    def results(self, n: int) -> list[list[int]]:
        """The best hypothesis' generated ids of the first `n` images, as runtime.decode.beam.beam_search gives them."""
        return [seq[1:length] for seq, length in zip(self.best_seqs[:n].tolist(), self.best_lens[:n].tolist())]


def beam_search_static(bucket, n: int, eos_every: int) -> list[list[int]]:
    """Beam search over a loaded runtime.decode.cuda_graphs.Bucket's first `n` images; ids per image as
    runtime.decode.beam.beam_search returns them."""
    for cur in range(1, bucket.settings.max_new_tokens + 1):
        bucket.tick()
        if cur % eos_every == 0 and bool(bucket.beams.gone.all()):
            break
    return bucket.beams.results(n)
