"""Train the small demo captioner (ViT + GPT-2) on procedural shapes and save it as an HF checkpoint."""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import tokenizers
import torch
from tokenizers import models, pre_tokenizers, processors
from transformers import (
    GenerationConfig,
    GPT2Config,
    PreTrainedTokenizerFast,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessorPil,
    get_cosine_schedule_with_warmup,
)

from demo import shapes
from demo.evaluate import encode, exact_match
from runtime.images import load_image

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS = 0, 1, 2
MAX_LENGTH = 1 + shapes.MAX_CAPTION_WORDS + 1  # decoder start token + words + end token
POOL_SIZE = 8192
EVAL_SEED_OFFSET = 1_000_000


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over the shapes vocabulary that appends <eos>, as labels need."""
    vocab = {word: i for i, word in enumerate([*SPECIALS, *shapes.WORDS])}
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", EOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        model_max_length=MAX_LENGTH,
    )


def build_model(vocab_size: int) -> VisionEncoderDecoderModel:
    """ViT (32 px, patch 8, 2 layers, width 128) + GPT-2 (2 layers, width 128) with all special ids set."""
    # Patch 8 (17 tokens) rather than 4 (65): about 3x cheaper steps on an AVX2-only CPU, and as
    # accurate, since shapes sit at fixed places.
    encoder = ViTConfig(
        image_size=shapes.IMAGE_SIZE_PX,
        patch_size=8,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
    )
    decoder = GPT2Config(
        vocab_size=vocab_size,
        n_positions=16,
        n_embd=128,
        n_layer=2,
        n_head=4,
        n_inner=256,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        add_cross_attention=True,
        is_decoder=True,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        decoder_start_token_id=BOS,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = BOS, EOS, PAD
    config.decoder_start_token_id = BOS
    for part in (config, config.encoder, config.decoder):
        part._attn_implementation = "sdpa"
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config = GenerationConfig(
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        decoder_start_token_id=BOS,
        max_length=MAX_LENGTH,
        num_beams=1,
        do_sample=False,
    )
    return model


def build_processor() -> ViTImageProcessorPil:
    """The image processor: resize to 32x32, scale to [-1, 1]; saved as a standard ViTImageProcessor."""
    return ViTImageProcessorPil(
        size={"height": shapes.IMAGE_SIZE_PX, "width": shapes.IMAGE_SIZE_PX}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


def training_pool(tokenizer, seed: int, size: int = POOL_SIZE) -> dict[str, torch.Tensor]:
    """Model inputs for `size` samples, half of them JPEG round-tripped; labels padded with -100."""
    coin = random.Random(f"jpeg {seed}")
    images, captions = [], []
    for image, caption in shapes.make_dataset(size, seed):
        images.append(load_image(encode(image, "jpeg")) if coin.random() < 0.5 else image)
        captions.append(caption)
    text = tokenizer(captions, padding="max_length", max_length=MAX_LENGTH - 1, return_tensors="pt")
    starts = torch.ones(len(captions), 1, dtype=text.attention_mask.dtype)
    return {
        "pixel_values": build_processor()(images, return_tensors="pt")["pixel_values"],
        "labels": text.input_ids.masked_fill(text.attention_mask == 0, -100),
        "decoder_attention_mask": torch.cat([starts, text.attention_mask[:, :-1]], dim=1),
    }


def train(
    model, tokenizer, steps: int, seed: int, pool_size: int = POOL_SIZE, batch_size: int = 64, lr: float = 1e-3
) -> None:
    """AdamW with warm-up and cosine decay on batches drawn from a seeded pool; prints step and loss."""
    start = time.monotonic()
    pool = training_pool(tokenizer, seed, pool_size)
    print(f"rendered {pool_size} training images in {time.monotonic() - start:.1f} s", flush=True)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(100, steps // 10), steps)
    model.train()
    start = time.monotonic()
    for step in range(1, steps + 1):
        index = torch.randint(pool_size, (batch_size,), generator=generator)
        loss = model(**{name: tensor[index] for name, tensor in pool.items()}).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps:
            elapsed_s = time.monotonic() - start
            print(f"step {step:4d}/{steps}  loss {loss.item():.4f}  {elapsed_s:5.1f} s", flush=True)
    model.eval()


def make_demo_model(out: str | Path, seed: int = 0, steps: int = 500, pool_size: int = POOL_SIZE) -> Path:
    """Train with `seed` and save model, image processor and tokenizer into the folder `out`."""
    threads = torch.get_num_threads()
    # The thread count changes how matmuls split their sums, so the weights; one thread makes them
    # the same on any core count (and was faster than two on a busy 2-core machine).
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        tokenizer = build_tokenizer()
        model = build_model(len(tokenizer))
        train(model, tokenizer, steps, seed, pool_size)
    finally:
        torch.set_num_threads(threads)
    out = Path(out)
    model.save_pretrained(out)
    build_processor().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: train, save, then report held-out exact-match accuracy through HF generate."""
    parser = argparse.ArgumentParser(prog="python -m demo.model", description=__doc__)
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument(
        "--seed", type=int, default=0, help=f"same seed, same bytes (held-out images use seed + {EVAL_SEED_OFFSET:,})"
    )
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps, batch 64")
    parser.add_argument("--eval-images", type=int, default=500, help="0 skips the accuracy check")
    parser.add_argument("--min-accuracy", type=float, default=0.95, help="fail under this exact match")
    args = parser.parse_args(argv)
    start = time.monotonic()
    out = make_demo_model(args.out, args.seed, args.steps)
    print(f"saved {out} after {time.monotonic() - start:.1f} s")
    for fmt in ("png", "jpeg") if args.eval_images else ():
        accuracy, misses = exact_match(out, args.eval_images, args.seed + EVAL_SEED_OFFSET, fmt)
        print(f"held-out exact match, {args.eval_images} {fmt} images: {accuracy:.1%}", *misses[:5], sep="\n  ")
        if accuracy < args.min_accuracy:
            raise SystemExit(
                f"{out} captions only {accuracy:.1%} of held-out {fmt} images exactly, "
                f"under --min-accuracy {args.min_accuracy:.0%}; train longer (--steps) or "
                "try another --seed"
            )
    print(f"done in {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
