"""Pick the encoder and decoder-step wrappers for a model family."""
from __future__ import annotations

from export import wrap_blip, wrap_vit_gpt2


def build(model, family: str, max_length: int):
    """(encoder module, decoder-step module, cache dims) for a supported family."""
    if family == "vit-gpt2":
        return wrap_vit_gpt2.VitGpt2Encoder(model), wrap_vit_gpt2.Gpt2Step(model, max_length), wrap_vit_gpt2.cache_shape(model)
    if family == "blip":
        return wrap_blip.BlipEncoder(model), wrap_blip.BlipStep(model, max_length), wrap_blip.cache_shape(model)
    raise ValueError(f"no wrapper for family {family!r}")
