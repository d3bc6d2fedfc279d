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
    from transformers import (GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig,
                              ViTImageProcessor)

    dec = GPT2Config(add_cross_attention=True, is_decoder=True, bos_token_id=EOS_GPT2, eos_token_id=EOS_GPT2,
                     pad_token_id=EOS_GPT2, initializer_range=0.1)  # long captions: docs/architecture.md
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
    text = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, sep_token_id=tok.sep_token_id,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id, initializer_range=0.1)
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


BUILDERS = {"vit-gpt2-base": vit_gpt2_base, "blip-base": blip_base, "tiny": tiny}


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
