"""A tiny random-weight Florence-2 saved as an HF folder (export tests; bench.models reuses its tokenizer and
processor at the base checkpoint's sizes): transformers' native classes at tiny sizes; the tokenizer is a small
byte-level BPE with BART's special ids (the real 50265-entry vocabulary is not available offline) plus Florence's
added tokens.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

FLORENCE_IMAGE_SIZE = 96  # the base checkpoint uses 768; 96 / 32 = 3 -> 3x3 + 1 = 10 image tokens (577 at 768)
FLORENCE_PROMPTS = [
    "What is the text in the image?",
    "What is the text in the image, with regions?",
    "What does the image describe?",
    "Describe in detail what is shown in the image.",
    "Describe with a paragraph what is shown in the image.",
    "Locate the objects with category name in the image.",
    "Locate the objects in the image, with their descriptions.",
    "Locate the region proposals in the image.",
]
FLORENCE_CAPTIONS = [
    "A green car parked in front of a yellow building.",
    "The image shows a dog running on the grass.",
    "A man is riding a bicycle down a city street.",
    "Two cats sleeping on a red sofa next to a window.",
    "A plate of food with rice, vegetables and meat on a wooden table.",
]
FLORENCE_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]
FLORENCE_ADDED = (
    ["<od>", "</od>", "<ocr>", "</ocr>"]
    + [f"<loc_{i}>" for i in range(1000)]
    + [
        "<cap>",
        "</cap>",
        "<ncap>",
        "</ncap>",
        "<dcap>",
        "</dcap>",
        "<poly>",
        "</poly>",
        "<sep>",
        "<region_cap>",
        "</region_cap>",
        "<grounding>",
        "</grounding>",
    ]
)
FLORENCE_POST_PROCESSOR_CONFIG = {  # Florence2PostProcessor refuses any parse task missing from this dict
    "ocr": {
        "AREA_THRESHOLD": 0.0,
        "PATTERN": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
    },
    "phrase_grounding": {"FILTER_BY_BLACK_LIST": True},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}


def florence_tokenizer():
    import json

    from transformers import BartTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=FLORENCE_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(FLORENCE_PROMPTS + FLORENCE_CAPTIONS, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = BartTokenizer(vocab=model["vocab"], merges=merges, extra_special_tokens={"image_token": "<image>"})
    tok.add_special_tokens({"mask_token": "<mask>"})
    tok.add_tokens(FLORENCE_ADDED)
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    return tok


def florence_processor(tok):
    from transformers import CLIPImageProcessor, Florence2Processor

    image_processor = CLIPImageProcessor(
        do_resize=True,
        size={"height": FLORENCE_IMAGE_SIZE, "width": FLORENCE_IMAGE_SIZE},
        resample=3,
        do_center_crop=False,
        crop_size={"height": FLORENCE_IMAGE_SIZE, "width": FLORENCE_IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=None,
    )
    image_processor.image_seq_length = (FLORENCE_IMAGE_SIZE // 32) ** 2 + 1
    return Florence2Processor(
        image_processor=image_processor, tokenizer=tok, post_processor_config=FLORENCE_POST_PROCESSOR_CONFIG
    )


def _florence_model(tok, forced_bos: bool, seed: int = 1, std: float = 1.0):
    import torch
    from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration, Florence2VisionConfig

    torch.manual_seed(seed)
    d_model = 32
    vision = Florence2VisionConfig(
        depths=[1, 1, 1, 1],
        embed_dim=[8, 16, 16, 32],
        num_heads=[1, 2, 2, 4],
        num_groups=[1, 2, 2, 4],
        window_size=2,
        projection_dim=d_model,
        drop_path_rate=0.0,
        max_position_embeddings=50,
        max_temporal_embeddings=100,
    )
    text = BartConfig(
        vocab_size=len(tok),
        d_model=d_model,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        scale_embedding=True,  # the real checkpoint has False; True here so the wrapper's scale is exercised
        dropout=0.0,
        init_std=std,
        forced_bos_token_id=0 if forced_bos else None,
    )
    config = Florence2Config(vision_config=vision, text_config=text, image_token_id=tok.image_token_id)
    model = Florence2ForConditionalGeneration(config).eval()
    # Re-draw the language model's and projector's matrices with std 1.0 (seeded) so greedy output is
    # image-dependent with clear margins: at std 0.3 every image gave the same one repeated token.
    # Random weights still never choose EOS, hence calibrate_eos below.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p in model.model.language_model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
        for _, p in model.model.multi_modal_projector.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    model.generation_config.decoder_start_token_id = 2
    model.generation_config.bos_token_id, model.generation_config.eos_token_id = 0, 2
    model.generation_config.pad_token_id = 1
    model.generation_config.forced_bos_token_id = 0 if forced_bos else None
    _calibrate_eos(model, tok)
    return model


def _florence_probe_images():
    """A few very different images (noise, flat colours, a gradient) of assorted sizes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 255, 128, dtype=np.uint8)[None, :, None], (96, 1, 3))
    return [
        Image.fromarray(rng.integers(0, 255, (120, 150, 3), dtype=np.uint8)),
        Image.new("RGB", (100, 80), (200, 30, 30)),
        Image.new("RGB", (64, 64), (20, 20, 220)),
        Image.fromarray(ramp),
        Image.fromarray(rng.integers(0, 80, (50, 70, 3), dtype=np.uint8)),
        Image.new("RGB", (64, 64), (240, 240, 240)),
    ]


def _calibrate_eos(model, tok, steps: int = 12) -> None:
    import torch

    """Random weights never pick EOS on their own; make EOS's (tied) row a copy of a token the probes emit
    mid-caption, so captions end at image-dependent lengths (exercises rows leaving the batch)."""
    import collections

    proc = florence_processor(tok)
    inputs = proc(text=["<MORE_DETAILED_CAPTION>"] * 6, images=_florence_probe_images(), return_tensors="pt")
    emb = model.model.language_model.shared.weight
    original = emb[tok.eos_token_id].clone()
    with torch.no_grad():
        seqs = model.generate(**inputs, max_new_tokens=steps, num_beams=1, do_sample=False)[:, 1:].tolist()
        counts = collections.Counter(t for s in seqs for t in s[2:-1])
        for token, _ in counts.most_common(8):
            emb[tok.eos_token_id] = 1.05 * emb[token]
            seqs = model.generate(**inputs, max_new_tokens=steps, num_beams=1, do_sample=False)[:, 1:].tolist()
            lengths = [s.index(tok.eos_token_id) + 1 if tok.eos_token_id in s[:-1] else steps for s in seqs]
            if len(set(lengths)) >= 2 and min(lengths) >= 3:
                return
        emb[tok.eos_token_id] = original


def make_florence2(folder: Path, forced_bos: bool = False) -> Path:
    """Save a tiny Florence2ForConditionalGeneration with its processor (96 px images, 10 image tokens)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = florence_tokenizer()
    model = _florence_model(tok, forced_bos)
    model.generation_config.max_length = 13
    model.save_pretrained(folder)
    florence_processor(tok).save_pretrained(folder)
    return folder
