"""Tiny random-weight Qwen2-VL, Qwen2.5-VL and Qwen3-VL checkpoints (export tests), saved as HF folders offline."""

from __future__ import annotations

import collections
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from checkpoints.tiny import WORDS

SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Qwen2-VL-2B-Instruct's chat template (the image branch; Qwen2.5-VL ships the same one)
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3-VL's has no default system turn
QWEN3_TEMPLATE = QWEN2_TEMPLATE.replace(
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}",
    "",
)
IMAGE_SIZE = {"qwen2_vl": 56, "qwen2_5_vl": 84, "qwen3_vl": 64}  # 2x2, 3x3 (uneven windows of 2), 2x2 tokens


def _tokenizer(template: str):
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIAL,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(
        [" ".join(WORDS)] * 4 + ["Describe this image in one sentence.", "system user assistant"], trainer
    )
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=SPECIAL[1:]
    )
    out.chat_template = template
    return out


def _config(kind: str, tok):
    import transformers

    ids = {
        name: tok.convert_tokens_to_ids(t)
        for name, t in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
    )
    if kind == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14)
        return transformers.Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    if kind == "qwen2_5_vl":
        vision = dict(
            depth=3,
            hidden_size=32,
            intermediate_size=48,
            num_heads=4,
            out_hidden_size=32,
            patch_size=14,
            window_size=56,
            fullatt_block_indexes=[1],
        )
        return transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    text.update(head_dim=8, rope_parameters={**text["rope_parameters"], "mrope_interleaved": True})
    vision = dict(
        depth=3,
        hidden_size=32,
        intermediate_size=48,
        num_heads=4,
        out_hidden_size=32,
        patch_size=16,
        num_position_embeddings=16,
        deepstack_visual_indexes=[0, 1],
    )
    return transformers.Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)


def _image_processor(kind: str):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    patch = 16 if kind == "qwen3_vl" else 14
    mean_std = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3} if kind == "qwen3_vl" else {}
    return Qwen2VLImageProcessorPil(patch_size=patch, min_pixels=(2 * patch) ** 2, **mean_std)


def make_qwen_vl(folder: Path, kind: str = "qwen2_vl", seed: int = 0) -> Path:
    """Save a tiny `kind` ("qwen2_vl", "qwen2_5_vl", "qwen3_vl") checkpoint with tokenizer, chat template and processor;
    EOS is made as likely as a common mid-caption token, so random-weight captions end at varied lengths."""
    import torch
    from transformers import AutoModelForImageTextToText

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(QWEN3_TEMPLATE if kind == "qwen3_vl" else QWEN2_TEMPLATE)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(_config(kind, tok), attn_implementation="sdpa").eval()
    gen = model.generation_config
    gen.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    gen.pad_token_id = gen.bos_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    gen.max_new_tokens, gen.do_sample = 10, False
    _redraw(model, seed)
    processor = _image_processor(kind)
    _calibrate_eos(model, tok, processor, kind)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _redraw(model, seed: int, std: float = 1.0) -> None:
    """Re-draw the language model's and the merger's matrices with a large std (seeded): at the default init every
    image gave the same one token repeated; at std 1 greedy captions vary with the image, with clear margins."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in (model.model.language_model, model.model.visual.merger, model.lm_head):
            for p in module.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=g) * std / p.shape[1] ** 0.5 * 4)


def probe_inputs(model, tok, processor, kind: str, count: int = 6, seed: int = 0) -> dict:
    """HF `generate` inputs for `count` random images at the tiny image size, with the default prompt."""
    import numpy as np
    import PIL.Image

    from export.families.qwen_vl import DEFAULT_PROMPT, hf_generate_inputs, prompt_ids

    side = IMAGE_SIZE[kind]
    rng = np.random.default_rng(seed)
    images = [
        PIL.Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((side, side)) for _ in range(count)
    ]
    pixels = processor(images=images, return_tensors="pt")
    grid = tuple(int(v) for v in pixels["image_grid_thw"][0])
    ids = prompt_ids(tok, tok.chat_template, DEFAULT_PROMPT, grid, model.config)
    return hf_generate_inputs(model.config, ids, pixels["pixel_values"], grid, count)


def _calibrate_eos(model, tok, processor, kind: str, steps: int = 10) -> None:
    import torch

    eos = tok.convert_tokens_to_ids("<|im_end|>")
    head = model.lm_head.weight
    inputs = probe_inputs(model, tok, processor, kind)
    prompt = inputs["input_ids"].shape[1]
    with torch.no_grad():
        seqs = model.generate(**inputs, max_new_tokens=steps, do_sample=False)[:, prompt:].tolist()
        counts = collections.Counter(t for s in seqs for t in s[2:-1])
        for token, _ in counts.most_common(8):
            head[eos] = 1.02 * head[token]
            seqs = model.generate(**inputs, max_new_tokens=steps, do_sample=False)[:, prompt:].tolist()
            lengths = [s.index(eos) + 1 if eos in s else steps for s in seqs]
            if len(set(lengths)) >= 3 and min(lengths) >= 3:
                return
