"""Qwen-VL exports: the KV prefix is HF's prefill, captions equal HF generate, pixels equal HF's processor."""

from __future__ import annotations

import hashlib

import pytest
import torch

from checkpoints.qwen_vl_tiny import IMAGE_SIZE, make_qwen_vl
from export.cli import main as export_main
from export.cli import parity_images
from export.settings import hf_generate_kwargs
from runtime.artifact.verify import verify
from runtime.captioner import load_captioner
from runtime.options import LoadOptions

KINDS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


@pytest.fixture(scope="module", params=KINDS)
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {}


@pytest.fixture(scope="module")
def folder(kind, folders, tmp_path_factory):
    if kind not in folders:
        folders[kind] = make_qwen_vl(tmp_path_factory.mktemp(kind), kind)
    return folders[kind]


@pytest.fixture(scope="module")
def artifact(kind, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / f"{kind}.pt2"
    code = export_main(
        ["--model", str(folder), "--out", str(out), "--max-batch", "8", "--image-size", str(IMAGE_SIZE[kind])]
    )
    assert code == 0
    return out


def _loaded(folder, kind, **options):
    from export.load import load

    return load(str(folder), image_size=IMAGE_SIZE[kind], **options)


def test_captions_equal_hf_generate_greedy_and_beam_batch_1_and_3(kind, folder, artifact):
    loaded = _loaded(folder, kind)
    captioner = load_captioner(artifact, device="cpu")
    eos = captioner.manifest["generation"]["eos_token_id"]
    images = parity_images([], 3, seed=11)
    pixels = loaded.family.hf_pixels(loaded, images)
    prompt = loaded.family.hf_prompt_length(loaded)
    for beams in (1, 3):
        for batch in (1, 3):
            with torch.inference_mode():
                hf = loaded.model.generate(
                    **loaded.family.hf_inputs(loaded, pixels[:batch]),
                    **hf_generate_kwargs(captioner.manifest["generation"], beams, loaded.family),
                )
            rows = [r[prompt:].tolist() for r in hf]
            expected = [loaded.family.hf_text(loaded, r[: r.index(eos) + 1] if eos in r else r) for r in rows]
            assert captioner.caption(images[:batch], num_beams=beams) == expected, (beams, batch)


def test_the_kv_prefix_is_hf_prefill_over_the_prompt_but_its_last_token(kind, folder):
    """Window attention (2.5), DeepStack (3) and M-RoPE positions included: HF's own cache after the prefill."""
    loaded = _loaded(folder, kind)
    encoder, _, _ = loaded.family.wrap(loaded, 8)
    pixels = loaded.family.hf_pixels(loaded, parity_images([], 2, seed=5))
    inputs = loaded.family.hf_inputs(loaded, pixels)
    inputs["input_ids"], inputs["attention_mask"] = inputs["input_ids"][:, :-1], inputs["attention_mask"][:, :-1]
    inputs["mm_token_type_ids"] = inputs["mm_token_type_ids"][:, :-1]
    with torch.inference_mode():
        cache = loaded.model(**inputs, use_cache=True).cache
        keys, values = encoder(pixels)
    for i, layer in enumerate(cache.layers):
        torch.testing.assert_close(keys[i], layer.keys, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(values[i], layer.values, rtol=1e-4, atol=1e-4)


def test_text_positions_after_the_prompt_continue_from_its_largest_m_rope_position(folder, kind):
    loaded = _loaded(folder, kind)
    _, step, _ = loaded.family.wrap(loaded, 8)
    positions, ids = loaded.extras["positions"], loaded.extras["prompt_ids"]
    assert step.first_position == int(positions.max()) == int(positions[0, -1])
    assert int(positions.max()) + 1 < ids.numel()  # image tokens share positions: not the prompt's length


def test_manifest_records_the_prompt_its_hash_and_the_image_size(kind, artifact):
    manifest, _ = verify(artifact)
    assert manifest["family"] == "qwen-vl" and manifest["image_size"] == [IMAGE_SIZE[kind]] * 2
    assert manifest["prompt"] == "Describe this image in one sentence."
    assert manifest["prompt_sha256"] == hashlib.sha256(manifest["prompt"].encode()).hexdigest()
    assert manifest["preprocessing"]["size"] == {"height": IMAGE_SIZE[kind], "width": IMAGE_SIZE[kind]}


def test_another_prompt_gives_other_prompt_ids_and_hash(folder, kind):
    one, other = _loaded(folder, kind), _loaded(folder, kind, prompt="What is in the picture?")
    assert one.extras["manifest"]["prompt_sha256"] != other.extras["manifest"]["prompt_sha256"]
    assert not torch.equal(one.extras["prompt_ids"], other.extras["prompt_ids"])


def test_an_image_size_the_processor_would_change_is_refused(folder, kind, tmp_path, capsys):
    code = export_main(["--model", str(folder), "--out", str(tmp_path / "x.pt2"), "--image-size", "50"])
    assert code == 1 and "multiples of" in capsys.readouterr().err


def test_a_prompt_for_a_family_without_one_is_refused(tiny_vit_gpt2_dir, tmp_path, capsys):
    code = export_main(["--model", str(tiny_vit_gpt2_dir), "--out", str(tmp_path / "x.pt2"), "--prompt", "hi"])
    assert code == 1 and "--prompt" in capsys.readouterr().err


def test_aoti_gives_the_exported_programs_tokens_and_int8_loads(kind, artifact, tmp_path):
    if kind != "qwen2_vl":
        pytest.skip("one AOTInductor compile (about 90 s on 2 cores) covers the step every variant shares")
    exported = load_captioner(artifact, device="cpu")
    pixels = exported.preprocess(parity_images([], 3, seed=3))
    aoti = load_captioner(
        artifact,
        device="cpu",
        options=LoadOptions(backend="aoti"),
        cache_dir=tmp_path,
        report=lambda *_args, **_fields: None,
    )
    assert aoti.backend == "aoti"
    for beams in (1, 3):
        assert aoti.generate_ids(pixels, num_beams=beams) == exported.generate_ids(pixels, num_beams=beams)
    int8 = load_captioner(artifact, device="cpu", options=LoadOptions(quantize="int8"))
    assert len(int8.caption_pixels(pixels)) == 3


def test_result_records_carry_the_prompt_hash_with_the_model(kind, artifact):
    import json
    from types import SimpleNamespace

    from runtime.agent.messages import ImageRef
    from runtime.agent.results import render

    captioner = load_captioner(artifact, device="cpu")
    item = SimpleNamespace(ref=ImageRef("pics", "a.jpg"), version_id=None, etag="e", size=1, caption="x", error=None)
    record = json.loads(render(item, captioner))
    assert record["model"] == {
        "name": captioner.name,
        "sha256": captioner.sha256,
        "prompt_sha256": captioner.manifest["prompt_sha256"],
    }
