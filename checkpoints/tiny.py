"""Tiny random-weight checkpoints of each supported architecture, saved as HF folders (export tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

WORDS = "a the cat dog sits on red blue green mat sofa with two of and in is near big small grass".split()


def _gpt2_tokenizer():
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([" ".join(WORDS)] * 4 + ["a cat, a dog. the mat!"], trainer)
    return GPT2TokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def _bert_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "'", "s"] + WORDS + ["[DEC]"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), bos_token="[DEC]")
    (folder / "vocab.txt").unlink()
    return tok


def _end_sooner_later(model, eos: int) -> None:
    """Make EOS likelier with each position, so random-weight captions end at different lengths."""
    import torch

    decoder = model.decoder
    decoder.config.tie_word_embeddings = False
    decoder.lm_head.weight = torch.nn.Parameter(decoder.transformer.wte.weight.detach().clone())
    direction = torch.randn(decoder.config.n_embd, generator=torch.Generator().manual_seed(3))
    direction /= direction.norm()
    with torch.no_grad():
        positions = torch.arange(decoder.config.n_positions, dtype=torch.float32)[:, None]
        decoder.transformer.wpe.weight += 0.1 * positions * direction[None, :]
        decoder.lm_head.weight[eos] = 2.5 * direction


def make_vit_gpt2(
    folder: Path,
    encoder: str = "vit",
    image_size: int = 32,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    varied_lengths: bool = True,
) -> Path:
    """Save a tiny VisionEncoderDecoder (ViT or DeiT + GPT-2) with tokenizer and image processor."""
    import torch
    from transformers import (
        DeiTConfig,
        DeiTImageProcessor,
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    enc_cls = {"vit": ViTConfig, "deit": DeiTConfig}[encoder]
    enc = enc_cls(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=image_size,
        patch_size=8,
    )
    dec = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=hidden,
        n_layer=layers,
        n_head=4,
        n_positions=64,
        add_cross_attention=True,
        is_decoder=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        initializer_range=0.1,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    config.decoder_start_token_id = eos
    config.pad_token_id = eos
    config.eos_token_id = eos
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=config)
    if varied_lengths:
        _end_sooner_later(model, eos)
    model.generation_config.decoder_start_token_id = eos
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    model.generation_config.max_length = 12
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if encoder == "vit":
        processor = ViTImageProcessor(size={"height": image_size, "width": image_size})
    else:
        processor = DeiTImageProcessor(
            size={"height": image_size + 8, "width": image_size + 8},
            crop_size={"height": image_size, "width": image_size},
        )
    processor.save_pretrained(folder)
    return folder


def make_blip(folder: Path, image_size: int = 32, seed: int = 0) -> Path:
    """Save a tiny BlipForConditionalGeneration with a WordPiece tokenizer and image processor."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _bert_tokenizer(folder)
    vocab = len(tokenizer)
    text = dict(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        encoder_hidden_size=48,
        bos_token_id=tokenizer.bos_token_id,
        sep_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        initializer_range=0.2,
    )
    vision = dict(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=image_size,
        patch_size=8,
    )
    config = BlipConfig(text_config=text, vision_config=vision)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    model.generation_config.max_length = 12
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    BlipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def _bpe_tokenizer_bart_ids():
    """A byte-level BPE with BART/RoBERTa's special ids: <s>=0, <pad>=1, </s>=2, <unk>=3 (TrOCR's layout)."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([" ".join(WORDS)] * 4 + ["INVOICE No. 42, total: 17.50"], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def make_trocr(
    folder: Path, image_size: int = 32, seed: int = 0, learned_positions: bool = True, forced_eos: bool = False
) -> Path:
    """Save a tiny VisionEncoderDecoder (ViT + TrOCRForCausalLM, trocr-base's layout) with tokenizer and processor.

    `learned_positions=False` is trocr-small's layout (sinusoidal positions, scaled embeddings, no embedding norm).
    """
    import torch
    from transformers import (
        TrOCRConfig,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _bpe_tokenizer_bart_ids()
    enc = ViTConfig(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=image_size,
        patch_size=8,
    )
    dec = TrOCRConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        decoder_layers=2,
        decoder_attention_heads=4,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        init_std=0.3,
        use_learned_position_embeddings=learned_positions,
        layernorm_embedding=learned_positions,
        scale_embedding=not learned_positions,
        activation_function="gelu" if learned_positions else "relu",
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 1, 2
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=config)
    with torch.no_grad():  # EOS as likely as the commonest mid-caption token: captions end at varied lengths
        model.eval()
        probe = model.generate(
            pixel_values=torch.randn(8, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed)),
            max_new_tokens=8,
            do_sample=False,
        )
        common = int(probe[:, 3:].flatten().mode().values)
        head = model.decoder.output_projection.weight
        head[2] = head[common] + 0.3 * torch.randn(head.shape[1], generator=torch.Generator().manual_seed(seed))
    gen = model.generation_config
    gen.decoder_start_token_id, gen.pad_token_id, gen.eos_token_id = 2, 1, 2
    gen.forced_eos_token_id = 2 if forced_eos else None
    gen.max_length = 12
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


# Florence-2: transformers' native classes at tiny sizes; the tokenizer is a small byte-level BPE with BART's
# special ids (the real 50265-entry vocabulary is not available offline) plus Florence's added tokens.
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


def _florence_tokenizer():
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


def _florence_processor(tok):
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

    proc = _florence_processor(tok)
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
    tok = _florence_tokenizer()
    model = _florence_model(tok, forced_bos)
    model.generation_config.max_length = 13
    model.save_pretrained(folder)
    _florence_processor(tok).save_pretrained(folder)
    return folder
