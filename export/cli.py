"""`python -m export`: HF checkpoint to one .pt2, proven token-identical to HF `generate` before it is written."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from export.source import check_source

PARITY_BEAMS = 3  # beam width proven when the checkpoint itself decodes greedily


class Progress:
    """Numbered step lines with elapsed seconds, on stderr."""

    def __init__(self, total: int):
        self.total, self.n, self.t0 = total, 0, time.perf_counter()

    def step(self, what: str) -> None:
        self.n += 1
        print(f"[{self.n}/{self.total}] {what} ...", file=sys.stderr, flush=True)
        self.t0 = time.perf_counter()

    def done(self, detail: str = "") -> None:
        print(f"      done in {time.perf_counter() - self.t0:.1f} s {detail}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        print(f"      {text}", file=sys.stderr, flush=True)


def parity_images(paths: list[str], count: int, seed: int = 0) -> list[PIL.Image.Image]:
    """The given images, or smooth random ones (upsampled noise) so captions differ per image."""
    from runtime.images import load_image

    if paths:
        return [load_image(p) for p in paths]
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        images.append(PIL.Image.fromarray(small).resize((96, 80), PIL.Image.BILINEAR))
    return images


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    p.add_argument("--model", required=True, help="HF hub id or local checkpoint folder")
    p.add_argument("--out", required=True, help="output .pt2 path")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: from the generation config")
    p.add_argument("--num-beams", type=int, default=None, help="default: from the generation config")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--max-batch", type=int, default=32, help="largest batch the programs accept")
    p.add_argument(
        "--task",
        default=None,
        help="Florence-2's task prompt, fixed in the artifact: <CAPTION>, <DETAILED_CAPTION>, "
        "<MORE_DETAILED_CAPTION> (default) or <OCR>",
    )
    p.add_argument(
        "--prompt",
        default=None,
        help="Qwen-VL's instruction, fixed in the artifact and put in the checkpoint's chat template "
        '(default: "Describe this image in one sentence.")',
    )
    p.add_argument(
        "--image-size",
        default=None,
        help="Qwen-VL's fixed image size, HEIGHTxWIDTH or one side (default 448: 256 image tokens)",
    )
    p.add_argument("--parity-images", nargs="*", default=[], help="images for the parity check (default: synthetic)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Load, wrap, export, write, prove parity, publish: the numbered steps below."""
    from export import archive, load, parity, settings, trace
    from runtime.captioner import load_captioner
    from runtime.errors import CaptionKitError

    args = parse_args(argv)
    check_source(args.model)
    if args.max_batch < 1:
        print("error: --max-batch must be at least 1", file=sys.stderr)
        return 2
    progress = Progress(6)
    try:
        progress.step(f"loading {args.model}")
        loaded = load.load(
            args.model, args.revision, args.dtype, args.task, prompt=args.prompt, image_size=args.image_size
        )
        gen = settings.generation_settings(
            loaded.model,
            loaded.family,
            args.max_new_tokens,
            args.num_beams,
            start_token_id=loaded.extras.get("start_token_id"),
        )
        preprocessing = loaded.family.preprocessing(loaded)
        progress.done(f"({loaded.source['architecture']}, family {loaded.family.name})")

        progress.step("exporting the encoder and decoder-step programs")
        images = parity_images(args.parity_images, 5)
        hf_pixels = loaded.family.hf_pixels(loaded, images)
        pixels = hf_pixels.to(getattr(torch, args.dtype))
        encoder, step, cache = loaded.family.wrap(loaded, gen["max_new_tokens"])
        max_beams = max(gen["num_beams"], PARITY_BEAMS)
        programs = trace.export_programs(
            encoder,
            step,
            tuple(pixels.shape[2:]),
            cache,
            gen["max_new_tokens"],
            args.max_batch,
            max_beams,
            getattr(torch, args.dtype),
        )
        progress.done()

        progress.step("writing a candidate artifact")
        manifest = build_manifest(loaded, gen, preprocessing, cache, args, tuple(pixels.shape[2:]), max_beams)
        out = Path(args.out)
        with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
            candidate = Path(tmp) / out.name
            tokenizer_json = loaded.tokenizer.backend_tokenizer.to_str()
            archive.write_archive(candidate, programs, tokenizer_json, manifest)
            progress.done(f"({candidate.stat().st_size / 2**20:.1f} MiB)")

            progress.step("describing the programs inside the artifact (checked against torch's loader)")
            progress.done(archive.describe_programs(candidate, programs, tokenizer_json, manifest))

            progress.step("proving parity with HF generate (through the written file)")
            captioner = load_captioner(candidate, device="cpu")
            ours = captioner.preprocess(images)
            pre_diff = float((ours - hf_pixels.float()).abs().max())
            progress.note(f"preprocessing: runtime vs HF image processor, largest difference {pre_diff:.2e}")
            if pre_diff > 1e-4:
                raise parity.ParityError(f"runtime preprocessing differs from the HF processor by {pre_diff:.2e}")
            odd = 5 if args.max_batch >= 5 else 3 if args.max_batch >= 3 else None
            batches = (1, odd) if odd else (1,)
            beams = sorted({1, gen["num_beams"] if gen["num_beams"] > 1 else PARITY_BEAMS})
            report = parity.check(
                loaded,
                captioner,
                pixels,
                gen,
                args.dtype,
                batches,
                tuple(beams),
                progress=lambda name: progress.note(f"{name} ok"),
            )
            progress.done()
            progress.note(report.summary())
            for tie in report.near_ties:
                progress.note(f"near-tie (reported, not a failure): {tie}")

            progress.step(f"publishing {out}")
            out.parent.mkdir(parents=True, exist_ok=True)
            candidate.replace(out)
            progress.done()
    except parity.ParityError as exc:
        print(f"error: parity check failed, nothing written: {exc}", file=sys.stderr)
        return 1
    except (CaptionKitError, ValueError, OSError) as exc:  # export.errors: all of them CaptionKitErrors
        print(f"error: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "artifact": str(out),
                "bytes": out.stat().st_size,
                "family": loaded.family.name,
                "parity": report.summary(),
            }
        )
    )
    return 0


def build_manifest(loaded, gen: dict, preprocessing: dict, cache: dict, args, image_size, max_beams: int) -> dict:
    """Everything inference needs besides the programs and the tokenizer."""
    import transformers

    from export.tokenizer_settings import clean_up_spaces
    from runtime.artifact.manifest import new_manifest

    return new_manifest(
        source=loaded.source,
        family=loaded.family.name,
        transformers_version=transformers.__version__,
        dtype=args.dtype,
        preprocessing=preprocessing,
        generation=gen,
        tokenizer={"clean_up_tokenization_spaces": clean_up_spaces(loaded.tokenizer), **loaded.family.text},
        max_batch=args.max_batch,
        max_beams=max_beams,
        max_length=gen["max_new_tokens"],
        image_size=list(image_size),
        cache=cache,
        task=loaded.extras.get("task"),
        **loaded.extras.get("manifest", {}),
    )
