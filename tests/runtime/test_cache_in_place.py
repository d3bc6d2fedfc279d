"""The step writes its caches in place (on every device): every family's step takes the rewrite, returns the cache it
was given, and gives the same logits and caches as the step that returns new ones; another shape is left alone."""

from __future__ import annotations

import pytest
import torch
from torch import fx

from runtime.backends.exported import load_programs
from runtime.captioner import LoadOptions, load_captioner
from runtime.load_policy import step_passes
from runtime.passes.cache_in_place import apply_cache_in_place
from step_tools import steps_and_cross

FAMILIES = ["tiny_artifact", "tiny_blip_artifact", "tiny_trocr_artifact", "tiny_florence2_artifact"]


@pytest.mark.parametrize("which", FAMILIES)
def test_every_family_step_writes_in_place_with_the_same_numbers(request, which):
    reference, step, settings, cross_k, cross_v, shape = steps_and_cross(request.getfixturevalue(which), 3)
    assert apply_cache_in_place(step)
    assert not any(n.target is torch.ops.aten.stack.default for n in step.graph.nodes)
    with torch.inference_mode():
        ref_k, ref_v = torch.zeros(shape), torch.zeros(shape)
        own_k, own_v = torch.zeros(shape), torch.zeros(shape)
        tokens = torch.full((shape[1],), settings.start_token_id)
        for t in range(3):
            want, ref_k, ref_v = reference(tokens, torch.tensor([t]), ref_k, ref_v, cross_k, cross_v)
            given_k, given_v = own_k, own_v
            got, own_k, own_v = step(tokens, torch.tensor([t]), own_k, own_v, cross_k, cross_v)
            assert own_k is given_k and own_v is given_v  # the caller's caches, written, not new ones
            assert torch.equal(got, want) and torch.equal(own_k, ref_k) and torch.equal(own_v, ref_v)
            assert own_k[:, :, :, t].abs().sum() > 0 and not own_k[:, :, :, t + 1 :].any()
            tokens = want.argmax(dim=-1)


def test_qwen_vl_step_is_left_alone(tiny_qwen2_vl_artifact):
    """Its attended keys concatenate each layer's cache again after the write (export/families/qwen_vl_programs.py),
    a second reader an in-place write would change: the pass must see that and leave the graph as it is."""
    step = load_programs(tiny_qwen2_vl_artifact, torch.device("cpu"))["decoder_step"]
    before = step.code
    assert not apply_cache_in_place(step)
    assert step.code == before


def test_the_captioner_gives_the_same_tokens_with_and_without_it(tiny_artifact):
    on = load_captioner(tiny_artifact, "cpu")
    off = load_captioner(tiny_artifact, "cpu", LoadOptions(cache_in_place=False))
    assert not any(n.target is torch.ops.aten.stack.default for n in on.step.graph.nodes)
    assert any(n.target is torch.ops.aten.stack.default for n in off.step.graph.nodes)
    torch.manual_seed(1)
    pixels = torch.randn(5, 3, on._preprocess.height, on._preprocess.width)
    for beams in (1, 3):
        assert on.generate_ids(pixels, num_beams=beams) == off.generate_ids(pixels, num_beams=beams)


def test_the_in_place_cache_is_applied_on_cuda_too_and_the_decode_layout_only_on_the_cpu():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert step_passes(LoadOptions(one_mask=False, one_gelu=False), cuda) == ("cache_in_place",)
    assert step_passes(LoadOptions(one_mask=False, one_gelu=False), cpu) == ("decode_layout", "cache_in_place")
    assert (
        step_passes(LoadOptions(cache_in_place=False, decode_layout=False, one_mask=False, one_gelu=False), cuda) == ()
    )
    assert step_passes(LoadOptions(), cuda) == ("cache_in_place", "one_mask", "one_gelu")


def _stacking_step(read_cache_again: bool) -> fx.GraphModule:
    """A two-layer step of the families' shape; with `read_cache_again`, the cache is also read after the writes."""

    class Step(torch.nn.Module):
        def forward(self, tokens, position, self_k, self_v, cross_k, cross_v):
            new = cross_k[:, :, :, :1] * tokens.float()[None, :, None, None, None]
            keys = [self_k[i].index_copy(2, position, new[i]) for i in range(2)]
            values = [self_v[i].index_copy(2, position, new[i]) for i in range(2)]
            logits = keys[0].sum() + values[1].sum()
            if read_cache_again:
                logits = logits + self_k.sum()
            return logits, torch.stack(keys), torch.stack(values)

    gm = fx.symbolic_trace(Step())
    return torch.fx.experimental.proxy_tensor.make_fx(gm)(*_step_args())


def _step_args():
    return (
        torch.ones(2, dtype=torch.long),
        torch.tensor([1]),
        torch.zeros(2, 2, 1, 3, 4),
        torch.zeros(2, 2, 1, 3, 4),
        torch.ones(2, 2, 1, 5, 4),
        torch.ones(2, 2, 1, 5, 4),
    )


def test_the_shape_it_rewrites_and_one_it_leaves_alone():
    plain = _stacking_step(read_cache_again=False)
    want = plain(*_step_args())
    assert apply_cache_in_place(plain)
    args = _step_args()
    got = plain(*args)
    assert got[1] is args[2] and got[2] is args[3]
    assert all(torch.equal(a, b) for a, b in zip(got, want))

    other = _stacking_step(read_cache_again=True)  # an in-place write would change what that later read sees
    before = other.code
    assert not apply_cache_in_place(other)
    assert other.code == before
