"""CPU quantization at load: every linear onto fbgemm kernels, close to the float programs, refused where it cannot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from export.cli import parity_images
from runtime.artifact.verify import verify
from runtime.backends.exported import load_programs
from runtime.captioner import LoadOptions, load_captioner
from runtime.errors import ArtifactError
from runtime.passes.quantize import quantize_programs

QUANTIZED = {torch.ops.quantized.linear_dynamic.default, torch.ops.quantized.linear_dynamic_fp16.default}
ROOT = Path(__file__).resolve().parents[2]
FLOAT_LINEARS = {torch.ops.aten.linear.default, torch.ops.aten.addmm.default}


def _constant_linears(gm) -> int:
    return sum(
        n.op == "call_function"
        and n.target in FLOAT_LINEARS
        and n.args[1 if n.target is torch.ops.aten.linear.default else 2].op == "get_attr"
        for n in gm.graph.nodes
    )


def _float_bytes(gm) -> int:
    return sum(t.numel() * t.element_size() for t in gm.state_dict().values() if t.is_floating_point())


@pytest.mark.parametrize("mode", ["int8", "fp16"])
@pytest.mark.parametrize("which", ["tiny_artifact", "tiny_blip_artifact"])
def test_every_constant_weight_linear_is_rewritten_and_its_float_weight_freed(request, which, mode):
    programs = load_programs(request.getfixturevalue(which), torch.device("cpu"))
    before = {name: (_constant_linears(gm), _float_bytes(gm)) for name, gm in programs.items()}
    counts = quantize_programs(programs, mode, torch.device("cpu"), "float32")
    for name, gm in programs.items():
        quantized = sum(n.op == "call_function" and n.target in QUANTIZED for n in gm.graph.nodes)
        assert counts[name] == before[name][0] == quantized > 0, (name, counts, before)
        assert _constant_linears(gm) == 0
        assert _float_bytes(gm) < before[name][1] / 3, f"{name}: float weights were not freed"


@pytest.mark.parametrize("mode, tolerance", [("fp16", 2e-3), ("int8", 5e-2)])
def test_quantized_programs_stay_close_to_the_float_ones(tiny_artifact, mode, tolerance):
    reference = load_programs(tiny_artifact, torch.device("cpu"))
    quantized = load_programs(tiny_artifact, torch.device("cpu"))
    quantize_programs(quantized, mode, torch.device("cpu"), "float32")
    torch.manual_seed(0)
    pixels = torch.randn(3, 3, 32, 32)
    max_length = verify(tiny_artifact)[0]["generation"]["max_new_tokens"]
    with torch.inference_mode():
        (ref_k, ref_v), (q_k, _) = reference["encoder"](pixels), quantized["encoder"](pixels)
        assert (q_k - ref_k).norm() / ref_k.norm() < tolerance
        layers, rows, heads, _, head_dim = ref_k.shape
        caches = torch.zeros(layers, rows, heads, max_length, head_dim)
        args = (torch.tensor([5, 9, 2]), torch.tensor([0]), caches, caches.clone())
        ref_logits = reference["decoder_step"](*args, ref_k, ref_v)[0]
        q_logits = quantized["decoder_step"](*args, ref_k, ref_v)[0]
    assert (q_logits - ref_logits).norm() / ref_logits.norm() < tolerance


@pytest.mark.parametrize("which", ["tiny_blip_artifact", "tiny_trocr_artifact", "tiny_florence2_artifact"])
def test_quantized_captioner_decodes_greedy_and_beam(request, which):
    captioner = load_captioner(request.getfixturevalue(which), "cpu", LoadOptions(quantize="int8"))
    assert captioner.quantize == "int8"
    pixels = captioner.preprocess(parity_images([], 6, seed=5))
    for beams in (1, 3):
        ids = captioner.generate_ids(pixels, num_beams=beams)
        assert len(ids) == 6 and all(0 < len(row) <= captioner.settings.max_new_tokens for row in ids)


@pytest.mark.parametrize(
    "device, dtype, message",
    [
        ("cuda", "float32", "fbgemm CPU kernels"),
        ("cpu", "bfloat16", "needs a float32 artifact"),
    ],
)
def test_quantize_is_refused_where_it_cannot_run(device, dtype, message):
    with pytest.raises(ArtifactError, match=message):
        quantize_programs({}, "int8", torch.device(device), dtype)


def test_quantize_with_aoti_or_an_unknown_mode_is_refused(tiny_artifact):
    with pytest.raises(ValueError, match="applies to the exported programs"):
        load_captioner(tiny_artifact, "cpu", LoadOptions(backend="aoti", quantize="int8"))
    with pytest.raises(ValueError, match="quantize must be one of"):
        load_captioner(tiny_artifact, "cpu", LoadOptions(quantize="int4"))


def test_caption_cli_takes_quantize(tiny_artifact, tmp_path):
    paths = []
    for i, image in enumerate(parity_images([], 2)):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "caption",
            "--artifact",
            str(tiny_artifact),
            "--device",
            "cpu",
            "--quantize",
            "fp16",
            *map(str, paths),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert ", fp16) on cpu" in run.stderr
    assert [json.loads(line)["uri"] for line in run.stdout.splitlines()] == list(map(str, paths))
