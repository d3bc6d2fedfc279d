"""Tiny random-weight checkpoints of each supported architecture, saved as HF folders (export tests, quick benchmarks)."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

WORDS = "a the cat dog sits on red blue green mat sofa with two of and in is near big small grass".split()


def _gpt2_tokenizer():
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 4 + ["a cat, a dog. the mat!"], trainer)
    return GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                             unk_token="<|endoftext|>", pad_token="<|endoftext|>")


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


def make_vit_gpt2(folder: Path, encoder: str = "vit", image_size: int = 32, seed: int = 0,
                  hidden: int = 32, layers: int = 2, varied_lengths: bool = True) -> Path:
    """Save a tiny VisionEncoderDecoder (ViT or DeiT + GPT-2) with tokenizer and image processor."""
    import torch
    from transformers import (DeiTConfig, DeiTImageProcessor, GPT2Config, VisionEncoderDecoderConfig,
                              VisionEncoderDecoderModel, ViTConfig, ViTImageProcessor)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    enc_cls = {"vit": ViTConfig, "deit": DeiTConfig}[encoder]
    enc = enc_cls(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  image_size=image_size, patch_size=8)
    dec = GPT2Config(vocab_size=len(tokenizer), n_embd=hidden, n_layer=layers, n_head=4, n_positions=64,
                     add_cross_attention=True, is_decoder=True, bos_token_id=eos, eos_token_id=eos,
                     pad_token_id=eos, initializer_range=0.1)
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
        processor = DeiTImageProcessor(size={"height": image_size + 8, "width": image_size + 8},
                                       crop_size={"height": image_size, "width": image_size})
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
    text = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=64, encoder_hidden_size=48,
                bos_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.sep_token_id,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id, initializer_range=0.2)
    vision = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  image_size=image_size, patch_size=8)
    config = BlipConfig(text_config=text, vision_config=vision)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    model.generation_config.max_length = 12
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    BlipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder
