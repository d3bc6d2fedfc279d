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
