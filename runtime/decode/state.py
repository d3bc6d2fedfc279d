"""What the decoding loops share: the manifest's generation settings, the step's signature, forced tokens, the
near-tie trace and the eager loops' caches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

Step = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DecodeSettings:
    """What the loop needs from the manifest's generation block."""

    start_token_id: int
    eos_token_id: int
    max_new_tokens: int
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    forced_bos_token_id: int | None = None  # the first generated token, whatever the model says (BART family)
    forced_eos_token_id: int | None = None  # the last allowed token, when a caption runs to max_new_tokens


def forced_token(settings: DecodeSettings, t: int) -> int | None:
    """The token HF's ForcedBOS/ForcedEOS logits processors impose at generated step `t` (0-based), if any."""
    if t == 0 and settings.forced_bos_token_id is not None:
        return settings.forced_bos_token_id
    if t == settings.max_new_tokens - 1 and settings.forced_eos_token_id is not None:
        return settings.forced_eos_token_id
    return None


def force(scores: torch.Tensor, token: int | None) -> torch.Tensor:
    """Scores where only `token` is possible (0, every other -inf), as HF's processors set them; unchanged if None."""
    if token is None:
        return scores
    forced = torch.full_like(scores, float("-inf"))
    forced[..., token] = 0.0
    return forced


@dataclass
class Trace:
    """Per image, per step: the gap between the best kept score and the best rejected one (near-tie evidence)."""

    gaps: list[list[float]] = field(default_factory=list)
    top: list[list[list[tuple[int, float]]]] = field(default_factory=list)


@dataclass
class Caches:
    """The decoder's explicit state: self-attention caches and per-row cross-attention keys/values."""

    self_k: torch.Tensor
    self_v: torch.Tensor
    cross_k: torch.Tensor
    cross_v: torch.Tensor

    @classmethod
    def empty(cls, cross_k: torch.Tensor, cross_v: torch.Tensor, max_length: int) -> Caches:
        layers, rows, heads, _, head_dim = cross_k.shape
        shape = (layers, rows, heads, max_length, head_dim)
        zeros = torch.zeros(shape, dtype=cross_k.dtype, device=cross_k.device)
        return cls(zeros, zeros.clone(), cross_k, cross_v)

    def select(self, rows: torch.Tensor, cross: bool = True) -> Caches:
        """Keep (and reorder) rows of the batch; cross-attention state only when rows change images."""
        pick = lambda t: t.index_select(1, rows)  # noqa: E731
        return Caches(
            pick(self.self_k),
            pick(self.self_v),
            pick(self.cross_k) if cross else self.cross_k,
            pick(self.cross_v) if cross else self.cross_v,
        )
