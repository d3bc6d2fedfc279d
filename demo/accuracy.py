"""`python -m demo.accuracy --artifact dist/demo.pt2`: exact-match accuracy of the demo captioner's .pt2."""

from __future__ import annotations

import argparse
import json
import sys
import time

from demo import shapes
from demo.evaluate import encode
from runtime.captioner import LoadOptions, load_captioner
from runtime.images import load_image

HELD_BACK_SEED = 424242  # a seed the training pool does not use
HELD_BACK_IMAGES = 500
FORMATS = ("png", "jpeg")


def held_back(count: int, seed: int, fmt: str) -> tuple[list, list[str]]:
    """`count` fresh shapes images round-tripped through `fmt` and decoded as the runtime does, and their captions."""
    samples = shapes.make_dataset(count, seed)
    return [load_image(encode(image, fmt)) for image, _ in samples], [want for _, want in samples]


def exact_match(got: list[str], wants: list[str]) -> tuple[float, list[str]]:
    """The share of captions equal to the wanted ones, and a line per miss."""
    misses = [f"got {g!r}, want {want!r}" for g, want in zip(got, wants, strict=True) if g != want]
    return 1 - len(misses) / len(wants), misses


def accuracy(
    artifact: str, count: int, seed: int, fmt: str, quantize: str | None = None
) -> tuple[float, list[str], float]:
    """Caption `count` fresh shapes images (round-tripped through `fmt`) with the runtime; (accuracy, misses, s)."""
    captioner = load_captioner(artifact, device="cpu", options=LoadOptions(quantize=quantize))
    images, wants = held_back(count, seed, fmt)
    started = time.perf_counter()
    got = captioner.caption(images)
    elapsed = time.perf_counter() - started
    return (*exact_match(got, wants), elapsed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.accuracy", description=__doc__)
    p.add_argument("--artifact", default="dist/demo.pt2")
    p.add_argument("--images", type=int, default=HELD_BACK_IMAGES)
    p.add_argument("--seed", type=int, default=HELD_BACK_SEED, help="a seed the training pool does not use")
    p.add_argument("--min-accuracy", type=float, default=0.95)
    p.add_argument("--quantize", default=None, choices=["int8", "fp16"], help="load as the runtime's --quantize would")
    args = p.parse_args(argv)
    ok = True
    for fmt in FORMATS:
        value, misses, elapsed = accuracy(args.artifact, args.images, args.seed, fmt, args.quantize)
        print(
            json.dumps(
                {
                    "artifact": args.artifact,
                    "quantize": args.quantize,
                    "format": fmt,
                    "images": args.images,
                    "exact_match": round(value, 4),
                    "seconds": round(elapsed, 2),
                    "misses": misses[:5],
                }
            )
        )
        ok &= value >= args.min_accuracy
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
