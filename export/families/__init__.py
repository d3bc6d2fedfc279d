"""The registry of model families: one module per architecture registers one `Family` (optimum's pattern).

Adding a family is one module here (its wrappers and its `FAMILY`), one line in `FAMILIES`, and its tests
(a tiny checkpoint in checkpoints/tiny.py, parity through `python -m export`). Nothing else branches on it.
"""

from __future__ import annotations

from export.families import blip, florence2, qwen_vl, trocr, vit_gpt2
from export.families.base import Family, UnsupportedModel

FAMILIES: tuple[Family, ...] = (vit_gpt2.FAMILY, trocr.FAMILY, blip.FAMILY, florence2.FAMILY, qwen_vl.FAMILY)


def detect(config) -> Family:
    """The family whose `matches` accepts `config`, or `UnsupportedModel` naming what was found and what would do."""
    for family in FAMILIES:
        if family.matches(config):
            why = family.refuse(config)
            if why:
                raise UnsupportedModel(why)
            return family
    kind = getattr(config, "model_type", None)
    if kind == "vision-encoder-decoder":
        found = (
            f"VisionEncoderDecoderModel with a {config.encoder.model_type} encoder and a "
            f"{config.decoder.model_type} decoder"
        )
    else:
        found = f"{', '.join(getattr(config, 'architectures', None) or ['?'])} (model_type {kind!r})"
    supported = "; ".join(f.description for f in FAMILIES)
    raise UnsupportedModel(f"unsupported architecture: {found}. Supported: {supported}.")


def by_name(name: str) -> Family:
    """The registered family called `name` (as the manifest records it)."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(f"no family {name!r}; registered: {[f.name for f in FAMILIES]}")
