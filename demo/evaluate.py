"""Measure a captioner checkpoint's exact-match accuracy on fresh shapes images through HF generate."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

from demo import shapes
from runtime.images import load_image


def encode(image, fmt: str) -> bytes:
    """The bytes of `image` saved as 'png' or 'jpeg' (Pillow's default quality, 75)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper())
    return buffer.getvalue()


def caption_images(folder: str | Path, images: list, batch_size: int = 250) -> list[str]:
    """Greedy captions by the checkpoint in `folder` (Auto classes, its saved generation config)."""
    processor = AutoImageProcessor.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = VisionEncoderDecoderModel.from_pretrained(folder).eval()
    captions = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            pixels = processor(images[i : i + batch_size], return_tensors="pt")["pixel_values"]
            tokens = model.generate(pixel_values=pixels)
            captions += tokenizer.batch_decode(tokens, skip_special_tokens=True)
    return captions


def exact_match(folder: str | Path, n: int, seed: int, fmt: str = "png") -> tuple[float, list[str]]:
    """Fraction of `n` images (seed `seed`, round-tripped through `fmt`) captioned exactly; and the misses."""
    samples = shapes.make_dataset(n, seed)
    images = [load_image(encode(image, fmt)) for image, _ in samples]
    got = caption_images(folder, images)
    misses = [f"got {g!r}, want {want!r}" for g, (_, want) in zip(got, samples) if g != want]
    return 1 - len(misses) / n, misses
