"""Load an HF image-to-text checkpoint (hub id or local folder) as its registered family describes it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from export.families import Family, UnsupportedModel, detect

__all__ = ["Loaded", "UnsupportedModel", "load"]


@dataclass
class Loaded:
    """Everything the later steps need from the checkpoint."""

    model: torch.nn.Module
    processor: object
    tokenizer: object
    family: Family
    source: dict
    extras: dict = field(default_factory=dict)  # what the family's `prepare` fixed at export (a task prompt)


def load(
    model_id: str, revision: str | None = None, dtype: str = "float32", task: str | None = None, **options
) -> Loaded:
    """Read the config first (fails fast on unsupported models), then the weights, processor and tokenizer;
    `task` is the prompt of a prompt-driven family (Florence-2), refused by the others; `options` (prompt,
    image_size) are given to a family that takes them (Qwen-VL) and refused by the others."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    config = AutoConfig.from_pretrained(model_id, revision=revision)
    family = detect(config)
    options = {key: value for key, value in options.items() if value is not None}
    for key in options:
        if key not in family.options:
            raise UnsupportedModel(
                f"--{key.replace('_', '-')}: the {family.name} family takes no such option "
                f"(it takes {', '.join(family.options) or 'none'})"
            )
    cls = getattr(transformers, family.model_class)
    model = cls.from_pretrained(
        model_id, revision=revision, dtype=getattr(torch, dtype), attn_implementation=family.attention
    )
    model.eval()
    if family.after_load is not None:
        family.after_load(model)
    # The PIL backend is what the runtime reproduces (and what transformers uses without torchvision).
    processor = AutoImageProcessor.from_pretrained(model_id, revision=revision, backend="pil")
    tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision)
    source = {
        "model": model_id,
        "revision": getattr(config, "_commit_hash", None) or revision or "local",
        "architecture": type(model).__name__,
        "family": family.name,
    }
    loaded = Loaded(model, processor, tokenizer, family, source, {"options": options})
    family.prepare(loaded, task)
    return loaded
