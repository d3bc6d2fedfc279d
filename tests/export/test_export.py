"""Export of each supported family: one .pt2, a complete manifest, and captions identical to HF generate."""

from __future__ import annotations

import json

import pytest
import torch

from export.cli import main as export_main
from export.cli import parity_images
from export.settings import hf_generate_kwargs
from runtime.artifact.verify import verify
from runtime.captioner import load_captioner

CASES = [
    ("tiny_artifact", "tiny_vit_gpt2_dir"),
    ("tiny_deit_artifact", "tiny_deit_gpt2_dir"),
    ("tiny_blip_artifact", "tiny_blip_dir"),
    ("tiny_trocr_artifact", "tiny_trocr_dir"),
    ("tiny_trocr_small_artifact", "tiny_trocr_small_dir"),
    ("tiny_florence2_artifact", "tiny_florence2_dir"),
]


def _hf(folder):
    """The HF side as a user of each family loads it (the family's class, attention and mends)."""
    from export.load import load

    loaded = load(str(folder))
    return loaded.model, loaded.processor, loaded.tokenizer


@pytest.mark.parametrize("artifact_name,folder_name", CASES)
def test_captions_equal_what_a_user_of_hf_reads_greedy_and_beam(artifact_name, folder_name, request):
    """HF `generate` and its family's decoding (batch_decode, or Florence-2's post_process_generation)."""
    from export.load import load

    artifact, folder = request.getfixturevalue(artifact_name), request.getfixturevalue(folder_name)
    loaded = load(str(folder))
    captioner = load_captioner(artifact, device="cpu")
    eos = captioner.manifest["generation"]["eos_token_id"]
    images = parity_images([], 3, seed=11)
    pixels = loaded.processor(images=images, return_tensors="pt")["pixel_values"]
    for beams in (1, 3):
        for batch in (1, 3):
            with torch.inference_mode():
                hf = loaded.model.generate(
                    **loaded.family.hf_inputs(loaded, pixels[:batch]),
                    **hf_generate_kwargs(captioner.manifest["generation"], beams, loaded.family),
                )
            rows = [r[1:].tolist() for r in hf]
            expected = [loaded.family.hf_text(loaded, r[: r.index(eos) + 1] if eos in r else r) for r in rows]
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

    class AnyAten(frozenset):  # the skew's own ops (zeros_like, a masked write) are outside the runtime's allow-list
        def __contains__(self, name):
            return str(name).startswith("aten.")

    from runtime.artifact import graphs

    monkeypatch.setattr(Gpt2Step, "forward", skewed)
    monkeypatch.setattr(graphs, "ALLOWED_OPS", AnyAten())
    out = tmp_path / "bad.pt2"
    code = export_main(["--model", str(tiny_vit_gpt2_dir), "--out", str(out), "--max-batch", "8"])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists() and not list(tmp_path.iterdir())
    assert "parity check failed, nothing written" in err
    assert "parted at step 2" in err and "greedy@batch1 image 0" in err


def test_bfloat16_export_passes_parity(tiny_vit_gpt2_dir, tmp_path, capsys):
    out = tmp_path / "bf16.pt2"
    code = export_main(
        [
            "--model",
            str(tiny_vit_gpt2_dir),
            "--out",
            str(out),
            "--dtype",
            "bfloat16",
            "--max-batch",
            "4",
            "--max-new-tokens",
            "6",
        ]
    )
    assert code == 0, capsys.readouterr().err
    captioner = load_captioner(out, device="cpu")
    assert captioner.manifest["dtype"] == "bfloat16" and captioner.manifest["generation"]["max_new_tokens"] == 6
    assert len(captioner.caption(parity_images([], 5))) == 5  # 5 > max batch 4: chunked


def test_an_artifact_for_one_image_at_a_time_exports_and_captions_image_by_image(tiny_vit_gpt2_dir, tmp_path, capsys):
    out = tmp_path / "one.pt2"
    code = export_main(
        ["--model", str(tiny_vit_gpt2_dir), "--out", str(out), "--max-batch", "1", "--max-new-tokens", "6"]
    )
    assert code == 0, capsys.readouterr().err
    captioner = load_captioner(out, device="cpu")
    assert captioner.manifest["max_batch"] == 1
    images = parity_images([], 3)
    assert captioner.caption(images) == [captioner.caption([image])[0] for image in images]


@pytest.mark.parametrize("artifact_name,folder_name", CASES)
def test_programs_hold_each_weight_once(artifact_name, folder_name, request):
    from runtime.artifact.pt2 import load_pt2

    artifact, folder = request.getfixturevalue(artifact_name), request.getfixturevalue(folder_name)
    model, _, _ = _hf(folder)
    # parameters and persistent buffers (Florence-2's projector keeps its position table in one)
    model_numel = sum(t.numel() for t in {t.data_ptr(): t for t in model.state_dict().values()}.values())
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


def test_florence2_records_its_task_and_refuses_tasks_that_answer_with_boxes(
    tiny_florence2_dir, tiny_florence2_artifact, tmp_path, capsys
):
    manifest, _ = verify(tiny_florence2_artifact)
    assert manifest["task"] == "<MORE_DETAILED_CAPTION>" and manifest["family"] == "florence2"
    assert manifest["generation"]["forced_bos_token_id"] == 0 and manifest["generation"]["forced_eos_token_id"] == 2
    code = export_main(["--model", str(tiny_florence2_dir), "--out", str(tmp_path / "od.pt2"), "--task", "<OD>"])
    assert code == 1 and not (tmp_path / "od.pt2").exists()
    assert "--task '<OD>'" in capsys.readouterr().err


def test_a_task_for_a_family_without_prompts_is_refused(tiny_vit_gpt2_dir, tmp_path, capsys):
    code = export_main(["--model", str(tiny_vit_gpt2_dir), "--out", str(tmp_path / "x.pt2"), "--task", "<OCR>"])
    assert code == 1 and "takes no task prompt" in capsys.readouterr().err


def test_florence2_with_remote_code_is_refused_pointing_at_the_converted_checkpoint(
    tiny_florence2_dir, tmp_path, capsys
):
    import shutil

    remote = tmp_path / "remote"
    shutil.copytree(tiny_florence2_dir, remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_florence2.Florence2Config"}
    (remote / "config.json").write_text(json.dumps(config))
    code = export_main(["--model", str(remote), "--out", str(tmp_path / "x.pt2")])
    assert code == 1 and "florence-community/Florence-2-base" in capsys.readouterr().err
