"""Random-weight checkpoints at real sizes (ViT-base + GPT-2 small, BLIP base) and the tiny/demo ones, as HF folders."""

from __future__ import annotations

from pathlib import Path

from tools.paths import REPO

EOS_GPT2 = 50256


def _word_tokenizer(size: int, special: str):
    """A WordLevel tokenizer over `size` synthetic words (no hub access here), `special` as the last id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(size - 1)}
    vocab[special] = size - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token=special))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=special, bos_token=special, pad_token=special)


def vit_gpt2_base(folder: Path, max_new_tokens: int = 20) -> Path:
    """nlpconnect/vit-gpt2-image-captioning's shapes: ViT-base/16 at 224 px + GPT-2 small, 4 beams."""
    import torch
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    dec = GPT2Config(
        add_cross_attention=True,
        is_decoder=True,
        bos_token_id=EOS_GPT2,
        eos_token_id=EOS_GPT2,
        pad_token_id=EOS_GPT2,
        initializer_range=0.1,
    )  # long captions: docs/architecture.md
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(), dec)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = EOS_GPT2
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config)
    gen = model.generation_config
    gen.decoder_start_token_id = gen.eos_token_id = gen.pad_token_id = EOS_GPT2
    gen.max_length, gen.num_beams = max_new_tokens + 1, 4
    model.save_pretrained(folder)
    _word_tokenizer(50257, "<|endoftext|>").save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def blip_base(folder: Path, max_new_tokens: int = 20) -> Path:
    """Salesforce/blip-image-captioning-base's shapes: ViT-B/16 at 384 px + BERT-base text decoder."""
    import torch
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(30517)] + ["[DEC]"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), bos_token="[DEC]")
    (folder / "vocab.txt").unlink()
    text = dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        sep_token_id=tok.sep_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.sep_token_id,
        initializer_range=0.1,
    )
    config = BlipConfig(text_config=text, vision_config={"image_size": 384})
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    model.generation_config.max_length, model.generation_config.num_beams = max_new_tokens + 1, 4
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    BlipImageProcessor(size={"height": 384, "width": 384}).save_pretrained(folder)
    return folder


def tiny(folder: Path) -> Path:
    """The test suite's tiny ViT + GPT-2 (captions of varied lengths)."""
    from checkpoints.tiny import make_vit_gpt2

    return make_vit_gpt2(folder)


def _bart_word_tokenizer(size: int):
    """A WordLevel tokenizer of `size` ids with BART's specials first: <s>=0, <pad>=1, </s>=2, <unk>=3."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    vocab |= {f"w{i}": i for i in range(4, size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def trocr_base(folder: Path, max_new_tokens: int = 20) -> Path:
    """microsoft/trocr-base-printed's shapes: ViT-base/16 at 384 px + a 12-layer, 1024-wide TrOCR decoder."""
    import torch
    from transformers import (
        TrOCRConfig,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    dec = TrOCRConfig(
        vocab_size=50265,
        d_model=1024,
        decoder_layers=12,
        decoder_attention_heads=16,
        decoder_ffn_dim=4096,
        max_position_embeddings=512,
        use_learned_position_embeddings=True,
        layernorm_embedding=True,
        scale_embedding=False,
        activation_function="gelu",
        init_std=0.1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(image_size=384), dec)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 1, 2
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config)
    gen = model.generation_config
    gen.decoder_start_token_id, gen.pad_token_id, gen.eos_token_id = 2, 1, 2
    gen.max_length, gen.num_beams = max_new_tokens + 1, 4
    model.save_pretrained(folder)
    _bart_word_tokenizer(50265).save_pretrained(folder)
    ViTImageProcessor(
        size={"height": 384, "width": 384}, image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=2
    ).save_pretrained(folder)
    return folder


def florence2_base(folder: Path, max_new_tokens: int = 20) -> Path:
    """florence-community/Florence-2-base's shapes: DaViT (128-1024 wide, 1/1/9/1 blocks) at 768 px + BART-base
    (6+6 layers, 768 wide, 51289 tokens); the tests' small tokenizer stands in for the real vocabulary."""
    import torch
    from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration, Florence2VisionConfig

    from checkpoints import florence2_tiny

    tok = florence2_tiny.florence_tokenizer()
    vision = Florence2VisionConfig(projection_dim=768)
    text = BartConfig(
        vocab_size=51289,
        d_model=768,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=12,
        decoder_attention_heads=12,
        encoder_ffn_dim=3072,
        decoder_ffn_dim=3072,
        max_position_embeddings=1024,
        scale_embedding=False,
        init_std=0.1,
        forced_bos_token_id=0,
    )
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(
        Florence2Config(vision_config=vision, text_config=text, image_token_id=tok.image_token_id)
    )
    gen = model.generation_config
    gen.decoder_start_token_id, gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = 2, 0, 2, 1
    gen.forced_bos_token_id, gen.max_length, gen.num_beams = 0, max_new_tokens + 1, 3
    model.save_pretrained(folder)
    from transformers import Florence2Processor

    image_processor = florence2_tiny.florence_processor(tok).image_processor
    image_processor.size = image_processor.crop_size = {"height": 768, "width": 768}
    image_processor.image_seq_length = 577  # (768 / 32)^2 + 1
    Florence2Processor(
        image_processor=image_processor,
        tokenizer=tok,
        post_processor_config=florence2_tiny.FLORENCE_POST_PROCESSOR_CONFIG,
    ).save_pretrained(folder)
    return folder


BUILDERS = {
    "vit-gpt2-base": vit_gpt2_base,
    "blip-base": blip_base,
    "trocr-base": trocr_base,
    "florence2-base": florence2_base,
    "tiny": tiny,
}


def checkpoint(name: str, workdir: Path) -> Path:
    """The HF folder for `name` (built once under `workdir`; 'demo' is the repo's trained demo-model/)."""
    if name == "demo":
        folder = REPO / "demo-model"
        if not (folder / "config.json").exists():
            raise FileNotFoundError("demo-model/ is missing: run `python -m demo.model --out demo-model` first")
        return folder
    folder = workdir / name
    if not (folder / "config.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        BUILDERS[name](folder)
    return folder
