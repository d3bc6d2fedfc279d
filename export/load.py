"""Load an HF image-to-text checkpoint (hub id or local folder) and tell which supported family it is."""
from __future__ import annotations

from dataclasses import dataclass

import torch

SUPPORTED = {
    "vit-gpt2": "VisionEncoderDecoderModel with a ViT or DeiT encoder and a GPT-2 decoder",
    "blip": "BlipForConditionalGeneration",
}


class UnsupportedModel(ValueError):
    """The checkpoint's architecture is not one the exporter can wrap."""


@dataclass
class Loaded:
    """Everything the later steps need from the checkpoint."""

    model: torch.nn.Module
    processor: object
    tokenizer: object
    family: str
    source: dict


def detect_family(config) -> str:
    """Map a config to a supported family, or raise `UnsupportedModel` naming what was found."""
    kind = getattr(config, "model_type", None)
    if kind == "vision-encoder-decoder":
        enc, dec = config.encoder.model_type, config.decoder.model_type
        if enc in ("vit", "deit") and dec == "gpt2":
            return "vit-gpt2"
        found = f"VisionEncoderDecoderModel with a {enc} encoder and a {dec} decoder"
    elif kind == "blip":
        return "blip"
    else:
        found = f"{', '.join(getattr(config, 'architectures', None) or ['?'])} (model_type {kind!r})"
    supported = "; ".join(SUPPORTED.values())
    raise UnsupportedModel(f"unsupported architecture: {found}. Supported: {supported}.")


def load(model_id: str, revision: str | None = None, dtype: str = "float32") -> Loaded:
    """Read the config first (fails fast on unsupported models), then the weights, processor and tokenizer."""
    from transformers import (AutoConfig, AutoImageProcessor, AutoTokenizer, BlipForConditionalGeneration,
                              VisionEncoderDecoderModel)

    config = AutoConfig.from_pretrained(model_id, revision=revision)
    family = detect_family(config)
    cls = VisionEncoderDecoderModel if family == "vit-gpt2" else BlipForConditionalGeneration
    # BLIP has no sdpa path in transformers; eager is what users get there.
    attention = "sdpa" if family == "vit-gpt2" else "eager"
    model = cls.from_pretrained(model_id, revision=revision, dtype=getattr(torch, dtype), attn_implementation=attention)
    model.eval()
    # The PIL backend is what the runtime reproduces (and what transformers uses without torchvision).
    processor = AutoImageProcessor.from_pretrained(model_id, revision=revision, backend="pil")
    tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision)
    source = {
        "model": model_id,
        "revision": getattr(config, "_commit_hash", None) or revision or "local",
        "architecture": type(model).__name__,
        "family": family,
    }
    return Loaded(model, processor, tokenizer, family, source)
