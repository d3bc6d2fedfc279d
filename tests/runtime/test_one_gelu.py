"""GPT-2's written-out tanh GELU made one op: the step's tokens stay those of the composed ops, other graphs stay."""

from __future__ import annotations

import torch
from torch import nn

from export.cli import parity_images
from runtime.captioner import LoadOptions, load_captioner
from runtime.decode.cuda_graphs import StaticDecoder, StaticOptions
from runtime.passes.one_gelu import apply_one_gelu

GELU = torch.ops.aten.gelu.default


def _gelus(gm) -> list:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is GELU]


def _tanhs(gm) -> list:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.tanh.default]


class _Written(nn.Module):
    """transformers' NewGELUActivation, as GPT-2 computes it, between two linears."""

    def __init__(self, coeff: float = 0.044715):
        super().__init__()
        self.up, self.down, self.coeff = nn.Linear(8, 32), nn.Linear(32, 8), coeff

    def forward(self, x):
        h = self.up(x)
        h = 0.5 * h * (1.0 + torch.tanh(0.7978845608028654 * (h + self.coeff * torch.pow(h, 3.0))))
        return self.down(h)


def _exported(module: nn.Module):
    return torch.export.export(module, (torch.randn(4, 8),)).module()


def test_the_written_out_gelu_becomes_one_op_with_the_same_values():
    torch.manual_seed(0)
    gm = _exported(_Written())
    x = torch.randn(4, 8) * 3
    before = gm(x)
    assert apply_one_gelu(gm, torch.float32) == 1
    assert len(_gelus(gm)) == 1 and not _tanhs(gm)
    assert not [n for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.pow.Tensor_Scalar]
    torch.testing.assert_close(gm(x), before, rtol=0, atol=1e-5)


def test_another_constant_or_a_bfloat16_model_is_left_composed():
    gm = _exported(_Written(coeff=0.05))
    code = gm.code
    assert apply_one_gelu(gm, torch.float32) == 0 and gm.code == code
    gm = _exported(_Written())
    code = gm.code
    assert apply_one_gelu(gm, torch.bfloat16) == 0 and gm.code == code


def test_the_gpt2_step_gets_one_gelu_a_layer_at_load_and_the_same_tokens_greedy_and_beam(tiny_artifact):
    fused = load_captioner(tiny_artifact, "cpu")
    composed = load_captioner(tiny_artifact, "cpu", LoadOptions(one_gelu=False))
    layers = len(_tanhs(composed.step))
    assert layers >= 2 and not _tanhs(fused.step) and len(_gelus(fused.step)) == layers
    assert apply_one_gelu(fused.step, torch.float32) == 0  # nothing left to fuse
    pixels = fused.preprocess(parity_images([], 6, seed=7))
    for beams in (1, fused.max_beams):
        expected = composed.generate_ids(pixels, num_beams=beams)
        assert fused.generate_ids(pixels, num_beams=beams) == expected
        fused.static = StaticDecoder(fused.step, fused.max_batch, StaticOptions(capture=False))
        assert fused.generate_ids(pixels, num_beams=beams) == expected  # the CUDA-graph step's code, run eagerly
        fused.static = None


def test_a_step_without_the_written_out_gelu_is_left_alone(tiny_blip_artifact):
    step = load_captioner(tiny_blip_artifact, "cpu", LoadOptions(one_gelu=False)).step
    code = step.code
    assert apply_one_gelu(step, torch.float32) == 0 and step.code == code
