"""Test helper for the load-time passes on a decoder step: the step twice, and cross-attention state to run it on."""

from __future__ import annotations

import torch

from runtime.backends.exported import load_programs
from runtime.captioner import LoadOptions, load_captioner


def steps_and_cross(artifact, images: int, dtype: torch.dtype = torch.float32):
    """The artifact's decoder step loaded twice (a reference, and one for a pass to rewrite), its decode settings,
    the encoder's cross-attention keys and values for `images` random images (seed 0, in the artifact's `dtype`),
    and the shape of an empty self-attention cache for those rows."""
    reference = load_programs(artifact, torch.device("cpu"))["decoder_step"]
    step = load_programs(artifact, torch.device("cpu"))["decoder_step"]
    captioner = load_captioner(artifact, "cpu", LoadOptions(decode_layout=False, cache_in_place=False))
    torch.manual_seed(0)
    with torch.inference_mode():
        size = (captioner._preprocess.height, captioner._preprocess.width)
        cross_k, cross_v = captioner.encoder(torch.randn(images, 3, *size, dtype=dtype))
    layers, rows, heads, _, head_dim = cross_k.shape
    shape = (layers, rows, heads, captioner.settings.max_new_tokens, head_dim)
    return reference, step, captioner.settings, cross_k, cross_v, shape
