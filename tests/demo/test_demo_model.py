"""The demo captioner's training: byte-identical per seed, and saved as a standard HF checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import tokenizers
import torch
from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

from demo import model as demo_model
from demo import shapes

STEPS = 20
POOL = 256


def _train(folder: Path, seed: int, threads: int) -> bytes:
    """Train with the caller's thread count set to `threads`, which the trainer must override."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        demo_model.make_demo_model(folder, seed=seed, steps=STEPS, pool_size=POOL)
    finally:
        torch.set_num_threads(before)
    return (folder / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo-model")
    _train(folder, seed=0, threads=1)
    return folder


def test_short_training_is_byte_identical_for_a_seed_and_differs_for_another(trained, tmp_path):
    again = _train(tmp_path / "again", seed=0, threads=2)
    assert again == (trained / "model.safetensors").read_bytes()
    assert _train(tmp_path / "other", seed=1, threads=2) != again


def test_saved_folder_loads_with_auto_classes_and_generates(trained):
    processor = AutoImageProcessor.from_pretrained(trained)
    tokenizer = AutoTokenizer.from_pretrained(trained)
    model = VisionEncoderDecoderModel.from_pretrained(trained).eval()
    images = [image for image, _ in shapes.make_dataset(3, seed=11)]
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (3, 3, shapes.IMAGE_SIZE_PX, shapes.IMAGE_SIZE_PX)
    with torch.inference_mode():
        tokens = model.generate(pixel_values=pixels)
    assert tokens.shape[0] == 3 and tokens.shape[1] <= demo_model.MAX_LENGTH
    assert (tokens[:, 0] == tokenizer.bos_token_id).all()
    assert all(isinstance(text, str) for text in tokenizer.batch_decode(tokens, skip_special_tokens=True))


def test_special_token_ids_agree_on_config_decoder_config_generation_config_and_tokenizer(trained):
    model = VisionEncoderDecoderModel.from_pretrained(trained)
    tokenizer = AutoTokenizer.from_pretrained(trained)
    want = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id)
    for config in (model.config, model.config.decoder, model.generation_config):
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id, config.decoder_start_token_id) == want
    assert model.config.decoder.add_cross_attention and model.config.decoder.is_decoder
    assert model.generation_config.num_beams == 1
    assert model.generation_config.max_length == 1 + shapes.MAX_CAPTION_WORDS + 1


def test_every_caption_round_trips_through_the_tokenizer_and_the_bare_tokenizer_json(trained):
    tokenizer = AutoTokenizer.from_pretrained(trained)
    bare = tokenizers.Tokenizer.from_file(str(trained / "tokenizer.json"))
    for scene in shapes.all_scenes():
        ids = tokenizer(scene.caption).input_ids
        assert ids[-1] == tokenizer.eos_token_id and tokenizer.unk_token_id not in ids
        with_start = [tokenizer.bos_token_id, *ids, tokenizer.pad_token_id]
        assert bare.decode(with_start, skip_special_tokens=True) == scene.caption


def test_training_labels_end_in_eos_then_minus_100_and_the_decoder_mask_covers_real_inputs():
    tokenizer = demo_model.build_tokenizer()
    pool = demo_model.training_pool(tokenizer, seed=2, size=8)
    captions = [caption for _, caption in shapes.make_dataset(8, seed=2)]
    for labels, mask, caption in zip(pool["labels"], pool["decoder_attention_mask"], captions):
        n = len(caption.split())
        assert tokenizer.decode(labels[:n]) == caption and labels[n] == demo_model.EOS
        assert (labels[n + 1 :] == -100).all()
        seen = min(n + 2, len(mask))  # the start token, the words and the end token as an input
        assert mask.tolist() == [1] * seen + [0] * (len(mask) - seen)
