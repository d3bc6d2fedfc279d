"""Export of each supported family: one .pt2, a complete manifest, and captions identical to HF generate."""
from __future__ import annotations

import json

import pytest
import torch

from export.cli import main as export_main
from export.cli import parity_images
from export.settings import hf_generate_kwargs
from runtime.artifact import verify
from runtime.captioner import load_captioner

CASES = [("tiny_artifact", "tiny_vit_gpt2_dir"), ("tiny_deit_artifact", "tiny_deit_gpt2_dir"),
         ("tiny_blip_artifact", "tiny_blip_dir"), ("tiny_trocr_artifact", "tiny_trocr_dir"),
         ("tiny_trocr_small_artifact", "tiny_trocr_small_dir")]


def _hf(folder):
    """The HF side as a user of each family loads it (the family's class, attention and mends)."""
    from export.load import load

    loaded = load(str(folder))
    return loaded.model, loaded.processor, loaded.tokenizer


@pytest.mark.parametrize("artifact_name,folder_name", CASES)
def test_captions_equal_hf_batch_decode_greedy_and_beam(artifact_name, folder_name, request):
    artifact, folder = request.getfixturevalue(artifact_name), request.getfixturevalue(folder_name)
    model, processor, tokenizer = _hf(folder)
    captioner = load_captioner(artifact, device="cpu")
    images = parity_images([], 3, seed=11)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    for beams in (1, 3):
        for batch in (1, 3):
            with torch.inference_mode():
                hf = model.generate(pixel_values=pixels[:batch], **hf_generate_kwargs(captioner.manifest["generation"], beams))
            expected = tokenizer.batch_decode(hf, skip_special_tokens=True)
            assert captioner.caption(images[:batch], num_beams=beams) == expected, (beams, batch)


def test_manifest_holds_everything_inference_needs(tiny_artifact):
    manifest, tokenizer_json = verify(tiny_artifact)
    assert manifest["schema_version"] == 1
    assert manifest["family"] == "vit-gpt2" and manifest["source"]["architecture"] == "VisionEncoderDecoderModel"
    assert manifest["torch_version"] == torch.__version__.split("+")[0]
    assert manifest["dtype"] == "float32" and manifest["max_batch"] == 8
    assert set(manifest["programs"]) == {"encoder", "decoder_step"}
    assert all(len(p["sha256"]) == 64 and p["records"] for p in manifest["programs"].values())
    pre = manifest["preprocessing"]
    assert pre["image_mean"] and pre["image_std"] and pre["size"]
    gen = manifest["generation"]
    assert {"start_token_id", "eos_token_id", "max_new_tokens", "num_beams", "length_penalty"} <= set(gen)
    assert json.loads(tokenizer_json)["model"]["type"] == "BPE"


def test_unsupported_architecture_fails_at_once_naming_it(tmp_path, capsys):
    from transformers import BertConfig, VisionEncoderDecoderConfig, ViTConfig

    folder = tmp_path / "vit-bert"
    VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(), BertConfig()).save_pretrained(folder)
    code = export_main(["--model", str(folder), "--out", str(tmp_path / "x.pt2")])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "x.pt2").exists()
    assert "vit encoder and a bert decoder" in err
    assert "BlipForConditionalGeneration" in err and "GPT-2" in err


def test_parity_failure_writes_nothing_and_says_where(tiny_vit_gpt2_dir, tmp_path, capsys, monkeypatch):
    from export.families.vit_gpt2 import Gpt2Step

    honest = Gpt2Step.forward

    def skewed(self, input_ids, position, self_k, self_v, cross_k, cross_v):
        logits, k, v = honest(self, input_ids, position, self_k, self_v, cross_k, cross_v)
        bump = torch.zeros_like(logits)
        bump[:, 7] = 50.0 * (position == 2).to(logits.dtype)
        return logits + bump, k, v

    monkeypatch.setattr(Gpt2Step, "forward", skewed)
    out = tmp_path / "bad.pt2"
    code = export_main(["--model", str(tiny_vit_gpt2_dir), "--out", str(out), "--max-batch", "8"])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists() and not list(tmp_path.iterdir())
    assert "parity check failed, nothing written" in err
    assert "parted at step 2" in err and "greedy@batch1 image 0" in err


def test_bfloat16_export_passes_parity(tiny_vit_gpt2_dir, tmp_path, capsys):
    out = tmp_path / "bf16.pt2"
    code = export_main(["--model", str(tiny_vit_gpt2_dir), "--out", str(out), "--dtype", "bfloat16",
                        "--max-batch", "4", "--max-new-tokens", "6"])
    assert code == 0, capsys.readouterr().err
    captioner = load_captioner(out, device="cpu")
    assert captioner.manifest["dtype"] == "bfloat16" and captioner.manifest["generation"]["max_new_tokens"] == 6
    assert len(captioner.caption(parity_images([], 5))) == 5  # 5 > max batch 4: chunked


@pytest.mark.parametrize("artifact_name,folder_name", CASES)
def test_programs_hold_each_weight_once(artifact_name, folder_name, request):
    from runtime.pt2 import load_pt2

    artifact, folder = request.getfixturevalue(artifact_name), request.getfixturevalue(folder_name)
    model, _, _ = _hf(folder)
    model_numel = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    programs = load_pt2(str(artifact)).exported_programs
    stored = sum(t.numel() for ep in programs.values() for t in ep.state_dict.values())
    assert stored <= model_numel, f"programs store {stored:,} weights, the model has {model_numel:,}"


def test_blip_encoder_attends_with_sdpa_and_leaves_the_hf_model_eager(tiny_blip_dir):
    from transformers.models.blip.modeling_blip import BlipAttention

    from export.families.blip import BlipEncoder, SdpaVisionAttention

    model, _, _ = _hf(tiny_blip_dir)
    encoder = BlipEncoder(model)
    assert all(isinstance(layer.self_attn, SdpaVisionAttention) for layer in encoder.vision.encoder.layers)
    assert all(isinstance(layer.self_attn, BlipAttention) for layer in model.vision_model.encoder.layers)
    assert {id(p) for p in encoder.vision.parameters()} == {id(p) for p in model.vision_model.parameters()}
    pixels = torch.randn(2, 3, *([model.config.vision_config.image_size] * 2))
    with torch.inference_mode():
        want = model.vision_model(pixel_values=pixels).last_hidden_state
        got = encoder.vision(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
