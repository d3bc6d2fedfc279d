"""The CPU decode layout: every step linear rewritten (GPT-2's Conv1D too), one row bit-identical, several rows
equal to float rounding."""

from __future__ import annotations

import pytest
import torch

from runtime.passes.decode_layout import _pack, apply_decode_layout, decode_conv1d, decode_linear, packed_linears
from runtime.passes.linears import constant_linears
from step_tools import steps_and_cross


def test_decode_linear_is_f_linear_for_one_row_and_within_rounding_for_several():
    torch.manual_seed(0)
    weight, bias = torch.randn(300, 64), torch.randn(300)
    one = torch.randn(1, 1, 64)
    assert torch.equal(decode_linear(one, weight, bias), torch.nn.functional.linear(one, weight, bias))
    many = torch.randn(8, 1, 64)
    for b in (bias, None):
        got, want = decode_linear(many, weight, b), torch.nn.functional.linear(many, weight, b)
        assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_decode_conv1d_is_addmm_for_one_row_and_within_rounding_for_several():
    torch.manual_seed(0)
    weight, bias = torch.randn(64, 300), torch.randn(300)  # Conv1D: [in, out]
    weight_t = weight.t().contiguous()
    one = torch.randn(1, 64)
    assert torch.equal(decode_conv1d(one, weight, weight_t, bias), torch.addmm(bias, one, weight))
    many = torch.randn(8, 64)
    got, want = decode_conv1d(many, weight, weight_t, bias), torch.addmm(bias, many, weight)
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_this_torch_packs_linears_and_the_packed_products_are_within_rounding_one_row_untouched():
    assert packed_linears()  # the CPU wheel this project pins has oneDNN: the packed path is what CPU workers run
    torch.manual_seed(0)
    weight, bias = torch.randn(300, 64), torch.randn(300)
    packed = _pack(weight)
    one, many = torch.randn(1, 1, 64), torch.randn(8, 1, 64)
    assert torch.equal(decode_linear(one, weight, bias, packed), torch.nn.functional.linear(one, weight, bias))
    got, want = decode_linear(many, weight, bias, packed), torch.nn.functional.linear(many, weight, bias)
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    conv = weight.t().contiguous()  # Conv1D: [in, out]; its packed copy is of the [out, in] weight
    assert torch.equal(decode_conv1d(one[0], conv, packed, bias), torch.addmm(bias, one[0], conv))
    got, want = decode_conv1d(many[:, 0], conv, packed, bias), torch.addmm(bias, many[:, 0], conv)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


LINEAR_TARGETS = (torch.ops.aten.linear.default, torch.ops.aten.addmm.default)


@pytest.mark.parametrize("pack", [False, True])
@pytest.mark.parametrize("which", ["tiny_artifact", "tiny_blip_artifact"])
def test_every_step_linear_takes_the_layout_and_the_step_still_agrees(request, which, pack):
    reference, step, settings, cross_k, cross_v, shape = steps_and_cross(request.getfixturevalue(which), 4)
    linears = sum(n.target in LINEAR_TARGETS for n in step.graph.nodes)
    assert apply_decode_layout(step, pack=pack) == linears > 0
    packed = [n for n in step.graph.nodes if n.op == "get_attr" and getattr(step, n.target).is_mkldnn]
    assert len(packed) == (linears if pack else 0)
    assert not any(n.target in LINEAR_TARGETS for n in step.graph.nodes)
    for n, (want, got) in _first_logits(reference, step, settings, cross_k, cross_v, torch.zeros(shape)):
        if n == 1:
            assert torch.equal(got, want)
        else:
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)


def _first_logits(reference, step, settings, cross_k, cross_v, cache):
    """(rows, (the reference step's logits, the rewritten step's)) for one row and four, at the first position."""
    with torch.inference_mode():
        for n in (1, 4):
            args = (
                torch.full((n,), settings.start_token_id),
                torch.tensor([0]),
                cache[:, :n],
                cache[:, :n].clone(),
                cross_k[:, :n],
                cross_v[:, :n],
            )
            yield n, (reference(*args)[0], step(*args)[0])


def test_bfloat16_linears_run_packed_from_one_row_on_one_copy_and_the_step_still_agrees(tiny_bf16_artifact):
    reference, step, settings, cross_k, cross_v, shape = steps_and_cross(tiny_bf16_artifact, 4, torch.bfloat16)
    linears = sum(n.target in LINEAR_TARGETS for n in step.graph.nodes)
    weights = {linear.weight_target for linear in constant_linears(step, dtypes=(torch.bfloat16,))}
    assert apply_decode_layout(step, pack=True) == linears > 0
    assert not any(n.target in LINEAR_TARGETS for n in step.graph.nodes)
    attrs = [getattr(step, n.target) for n in step.graph.nodes if n.op == "get_attr"]
    assert sum(a.is_mkldnn for a in attrs) == linears  # and the weights they replace are gone
    kept = {n.target for n in step.graph.nodes if n.op == "get_attr"} & weights
    assert len(kept) <= 1  # the LM head's weight is the token embedding's too (tied): the embedding still reads it
    cache = torch.zeros(shape, dtype=torch.bfloat16)
    for _n, (want, got) in _first_logits(reference, step, settings, cross_k, cross_v, cache):
        assert torch.allclose(got.float(), want.float(), rtol=0.05, atol=0.05), (got - want).abs().max()
