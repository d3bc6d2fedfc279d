"""`python -m tools.compare A.pt2 B.pt2 [..] --images FILES_OR_FOLDERS --out page.html`: captions side by side."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from runtime.cache import DEFAULT_DIR
from runtime.errors import BadImage, CaptionKitError
from runtime.images.formats import IMAGE_SUFFIXES, is_image_name
from tools.gallery import write_page
from tools.review_page import Cell, Item, mark_differences, render
from tools.thumbnails import thumbnails

MODEL_HEADER = ("model", "file", "sha256", "prompt", "images/s", "errors")


@dataclasses.dataclass
class Run:
    """One artifact's captions of the images (None where the image could not be read) and its speed here."""

    artifact: Path
    name: str
    sha256: str
    prompt: str | None
    captions: list[str | None]
    images_per_s: float


def image_files(paths: list[str]) -> tuple[list[Path], int]:
    """(the image files named or found under folders, recursively, in name order; how many files were skipped)."""
    found, skipped = [], 0
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            found += [p for p in files if is_image_name(p.name)]
            skipped += sum(1 for p in files if not is_image_name(p.name))
        elif path.is_file():
            found.append(path)
        else:
            raise BadImage(f"{path}: no such file or folder")
    return found, skipped


def caption_all(artifact: Path, files: list[Path], *, device: str, cache_dir: str) -> tuple[Run, list[str | None]]:
    """Load `artifact` and caption `files` a batch at a time (decoded per batch, so memory holds one batch); the
    run, and per file why it could not be read (None: captioned). images/s counts the captioning only, after a
    warm-up batch."""
    from runtime.captioner import LoadOptions, load_captioner
    from runtime.images import load_image

    captioner = load_captioner(artifact, device, LoadOptions(), cache_dir=cache_dir)
    captions: list[str | None] = [None] * len(files)
    errors: list[str | None] = [None] * len(files)
    seconds, warm = 0.0, False
    for start in range(0, len(files), captioner.max_batch):
        good, images = [], []
        for i in range(start, min(start + captioner.max_batch, len(files))):
            try:
                images.append(load_image(files[i]))
                good.append(i)
            except BadImage as exc:
                errors[i] = str(exc)
        if not images:
            continue
        if not warm:  # a first call pays one-time costs (threads, allocator), not the model's speed
            captioner.caption(images)
            warm = True
        started = time.perf_counter()
        for i, caption in zip(good, captioner.caption(images)):
            captions[i] = caption
        seconds += time.perf_counter() - started
    done = sum(1 for error in errors if error is None)
    run = Run(
        artifact,
        captioner.name,
        captioner.sha256,
        captioner.manifest.get("prompt"),
        captions,
        done / seconds if done and seconds > 0 else 0.0,
    )
    return run, errors


def page(files: list[Path], errors: list[str | None], runs: list[Run], keys: list[str]) -> tuple[str, dict]:
    """The side-by-side page and its summary (images/s per model, the share of images whose captions differ)."""
    thumbs = thumbnails(file.read_bytes() if error is None else None for file, error in zip(files, errors))
    items = []
    for i, (file, error, thumb) in enumerate(zip(files, errors, thumbs)):
        cells = [Cell(caption=run.captions[i], error=error, model=run.artifact.name) for run in runs]
        mark_differences(cells)
        items.append(Item(key=keys[i], uri=str(file), thumb=thumb, cells=cells))
    captioned = [item for item, error in zip(items, errors) if error is None]
    differ = sum(1 for item in captioned if item.differs)
    share = differ / len(captioned) if captioned else 0.0
    models = [
        [
            run.name,
            run.artifact.name,
            run.sha256[:12],
            run.prompt or "-",
            f"{run.images_per_s:.1f}",
            sum(1 for e in errors if e is not None),
        ]
        for run in runs
    ]
    summary = {
        "images": len(files),
        "captioned": len(captioned),
        "differ": differ,
        "differ_share": round(share, 4),
        "models": [
            {
                "artifact": str(run.artifact),
                "model": run.name,
                "prompt": run.prompt,
                "images_per_s": round(run.images_per_s, 2),
            }
            for run in runs
        ],
    }
    line = (
        f"{len(files):,} images; captions differ on {differ:,} of {len(captioned):,} ({share:.0%}); "
        "images/s measured on this machine, one model at a time"
    )
    return render(
        f"compare {' vs '.join(run.artifact.name for run in runs)}",
        items,
        summary=[line],
        models=models,
        model_header=MODEL_HEADER,
    ), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.compare", description=__doc__.split(":", 1)[1])
    parser.add_argument("artifacts", nargs="+", help="two or more .pt2 files (for two prompts: two exports)")
    parser.add_argument("--images", nargs="+", required=True, help="image files and folders (recursive)")
    parser.add_argument("--out", default="compare.html", help="the page to write (default compare.html)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--cache", default=DEFAULT_DIR, help="the local cache (runtime.cache)")
    args = parser.parse_args(argv)
    if len(args.artifacts) < 2:
        parser.error("give two or more artifacts to compare")
    try:
        files, skipped = image_files(args.images)
        if not files:
            raise BadImage(f"no images in {' '.join(args.images)} (accepted: {', '.join(IMAGE_SUFFIXES)})")
        outcomes = [caption_all(Path(a), files, device=args.device, cache_dir=args.cache) for a in args.artifacts]
    except (CaptionKitError, ValueError) as exc:
        raise SystemExit(f"compare: {exc}") from None
    except RuntimeError as exc:  # out of memory, a program that fails on these inputs: one line, not a trace
        raise SystemExit(f"compare: the model failed: {str(exc).strip().splitlines()[0][:300]}") from None
    runs, errors = [run for run, _ in outcomes], outcomes[0][1]  # the same decoder for all: the same errors
    roots = [Path(p) for p in args.images if Path(p).is_dir()]
    keys = [next((f.relative_to(r).as_posix() for r in roots if f.is_relative_to(r)), f.name) for f in files]
    text, summary = page(files, errors, runs, keys)
    report = write_page(Path(args.out), text)
    if report["replaced"]:
        print(f"compare: replaced the earlier {args.out}", file=sys.stderr)
    print(json.dumps({**report, **summary, "skipped_not_images": skipped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
