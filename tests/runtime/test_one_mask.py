"""One float attention mask per step: every family's self-attention calls share it, and logits and tokens are those
of the step that hands each call the boolean mask."""

from __future__ import annotations

import pytest
import torch

from export.cli import parity_images
from runtime.captioner import LoadOptions, load_captioner
from runtime.decode.cuda_graphs import StaticDecoder, StaticOptions
from runtime.decode.state import Caches
from runtime.passes.one_mask import SDPA, apply_one_mask

FAMILIES = ["tiny_artifact", "tiny_blip_artifact", "tiny_trocr_artifact", "tiny_florence2_artifact"]


def _masked_calls(step) -> list:
    return [
        n
        for n in step.graph.nodes
        if n.op == "call_function" and n.target is SDPA and (len(n.args) > 3 or "attn_mask" in n.kwargs)
    ]


@pytest.mark.parametrize("fixture", FAMILIES)
def test_every_self_attention_call_shares_one_float_mask_with_the_same_tokens(request, fixture):
    artifact = request.getfixturevalue(fixture)
    on = load_captioner(artifact, "cpu")
    off = load_captioner(artifact, "cpu", LoadOptions(one_mask=False))
    masks = {n.args[3] for n in _masked_calls(on.step)}
    assert len(masks) == 1 and len(_masked_calls(on.step)) >= 2
    (mask,) = masks
    assert mask.target is torch.ops.aten.masked_fill.Scalar and mask.args[2] == float("-inf")
    assert {n.args[3].target for n in _masked_calls(off.step)} == {torch.ops.aten.view.default}  # boolean per call

    pixels = on.preprocess(parity_images([], 5, seed=5))
    with torch.inference_mode():
        cross_k, cross_v = on.encoder(pixels)
        caches = Caches.empty(cross_k, cross_v, on.settings.max_new_tokens)
        tokens = torch.full((5,), on.settings.start_token_id)
        args = (tokens, torch.tensor([0]), caches.self_k, caches.self_v, cross_k, cross_v)
        assert torch.equal(on.step(*[a.clone() for a in args])[0], off.step(*[a.clone() for a in args])[0])
    for beams in (1, on.max_beams):
        expected = off.generate_ids(pixels, num_beams=beams)
        assert on.generate_ids(pixels, num_beams=beams) == expected
        on.static = StaticDecoder(on.step, on.max_batch, StaticOptions(capture=False))
        assert on.generate_ids(pixels, num_beams=beams) == expected
        on.static = None


def test_a_step_whose_masks_are_not_boolean_comparisons_is_left_alone(tiny_qwen2_vl_artifact):
    step = load_captioner(tiny_qwen2_vl_artifact, "cpu", LoadOptions(one_mask=False)).step
    before = step.code
    assert apply_one_mask(step, torch.float32) == 0 and step.code == before
