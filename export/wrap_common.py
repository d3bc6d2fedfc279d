"""Shared pieces of the tensor-only wrappers: head reshapes, the cache write and the position mask."""

from __future__ import annotations

import copy

import torch
from torch import nn


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, S, H*D] -> [B, H, S, D]."""
    b, s, e = x.shape
    return x.view(b, s, num_heads, e // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, S, D] -> [B, S, H*D]."""
    b, h, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, h * d)


def write_cache(cache: torch.Tensor, position: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Functionally write one step's keys or values ([B, H, 1, D]) at `position` of a [B, H, T, D] cache."""
    return cache.index_copy(2, position, new)


def position_mask(position: torch.Tensor, max_length: int) -> torch.Tensor:
    """Boolean [1, 1, 1, T] mask letting the current token see cache slots 0..position."""
    slots = torch.arange(max_length, device=position.device)
    return (slots <= position).view(1, 1, 1, max_length)


def swap_submodules(module: nn.Module, **replacements: nn.Module | None) -> nn.Module:
    """A shallow copy of `module` (same parameters) with some child modules replaced; `module` is unchanged."""
    clone = copy.copy(module)
    clone._modules = {**module._modules, **replacements}
    return clone


def without_pooler(module: nn.Module) -> nn.Module:
    """A shallow copy of a vision model whose unused pooler is dropped, so export does not keep its weights."""
    if getattr(module, "pooler", None) is None:
        return module
    return swap_submodules(module, pooler=None)
