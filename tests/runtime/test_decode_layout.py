"""The CPU decode layout: every step linear rewritten, one row bit-identical, several rows equal to float rounding."""
from __future__ import annotations

import pytest
import torch

from runtime.artifact.verify import load_programs
from runtime.captioner import LoadOptions, load_captioner
from runtime.passes.decode_layout import apply_decode_layout, decode_linear


def test_decode_linear_is_f_linear_for_one_row_and_within_rounding_for_several():
    torch.manual_seed(0)
    weight, bias = torch.randn(300, 64), torch.randn(300)
    one = torch.randn(1, 1, 64)
    assert torch.equal(decode_linear(one, weight, bias), torch.nn.functional.linear(one, weight, bias))
    many = torch.randn(8, 1, 64)
    for b in (bias, None):
        got, want = decode_linear(many, weight, b), torch.nn.functional.linear(many, weight, b)
        assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("which", ["tiny_artifact", "tiny_blip_artifact"])
def test_every_step_linear_takes_the_layout_and_the_step_still_agrees(request, which):
    artifact = request.getfixturevalue(which)
    reference = load_programs(artifact, torch.device("cpu"))["decoder_step"]
    step = load_programs(artifact, torch.device("cpu"))["decoder_step"]
    linears = sum(n.target is torch.ops.aten.linear.default for n in step.graph.nodes)
    assert apply_decode_layout(step) == linears > 0
    assert not any(n.target is torch.ops.aten.linear.default for n in step.graph.nodes)
    captioner = load_captioner(artifact, "cpu", LoadOptions(decode_layout=False))
    torch.manual_seed(0)
    with torch.inference_mode():
        size = (captioner._preprocess.height, captioner._preprocess.width)
        cross_k, cross_v = captioner.encoder(torch.randn(4, 3, *size))
        layers, rows, heads, _, head_dim = cross_k.shape
        cache = torch.zeros(layers, rows, heads, captioner.settings.max_new_tokens, head_dim)
        for n in (1, 4):
            args = (torch.full((n,), captioner.settings.start_token_id), torch.tensor([0]), cache[:, :n],
                    cache[:, :n].clone(), cross_k[:, :n], cross_v[:, :n])
            want, got = reference(*args)[0], step(*args)[0]
            if n == 1:
                assert torch.equal(got, want)
            else:
                assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
