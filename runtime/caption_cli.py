"""`python -m runtime caption`: caption image files, folders and globs with a .pt2 into a caption table."""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

from runtime.cache import DEFAULT_DIR
from runtime.caption_table import COLUMNS, TableWriter, check_out, dump_line
from runtime.errors import ArtifactError, BadImage, CaptionKitError, CaptureFailed
from runtime.images.formats import HUMAN_LIST, is_image_name
from runtime.load_policy import BACKENDS, DEVICES, QUANTIZE_MODES
from runtime.progress import bar

GLOB_CHARS = "*?["


class NoImages(CaptionKitError):
    """A path that names nothing, or inputs that hold no image at all."""


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if any(c in p for c in GLOB_CHARS))]]
    return Path(*fixed) if fixed else Path(".")


def _walk(folder: Path, root: Path, found: dict[str, str]) -> int:
    skipped = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            if is_image_name(path.name):
                found.setdefault(str(path), path.relative_to(root).as_posix())
            else:
                skipped += 1
    return skipped


def gather(inputs: list[str]) -> tuple[list[tuple[str, str]], int]:
    """([(uri, key)], files skipped as not images): a file named is always tried; folders (recursive) and globs
    give their files with an accepted image suffix. A name that matches nothing is NoImages."""
    found: dict[str, str] = {}
    skipped = 0
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            skipped += _walk(path, path, found)
        elif path.is_file():
            found.setdefault(given, path.name)
        elif any(c in given for c in GLOB_CHARS):
            matches = sorted(glob.glob(given, recursive=True))
            if not matches:
                raise NoImages(f"nothing matches {given!r}")
            root = _glob_root(given)
            for match in map(Path, matches):
                if match.is_dir():
                    skipped += _walk(match, root, found)
                elif is_image_name(match.name):
                    found.setdefault(str(match), os.path.relpath(match, root).replace(os.sep, "/"))
                else:
                    skipped += 1
        else:
            raise NoImages(f"no such file or folder: {given}")
    if not found:
        raise NoImages(f"no images in {' '.join(inputs)} ({skipped} other file(s) skipped; accepted: {HUMAN_LIST})")
    return list(found.items()), skipped


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime caption", description=__doc__)
    p.add_argument("--artifact", required=True, help="path to the .pt2")
    p.add_argument("--out", help="write the table to this .jsonl, .csv or .parquet file (default: JSON lines, stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (else refused)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--num-beams", type=int, default=None, help="default: the artifact's generation settings")
    p.add_argument("--batch-size", type=int, default=None, help="default: the artifact's max batch")
    p.add_argument(
        "--backend",
        default="exported",
        choices=BACKENDS,
        help="aoti: compile the programs with AOTInductor for this device (cached), else the exported ones",
    )
    p.add_argument(
        "--quantize",
        default=None,
        choices=QUANTIZE_MODES,
        help="CPU: run the linear layers on fbgemm int8 / float16-weight kernels (faster; captions may differ)",
    )
    p.add_argument(
        "--cache",
        "--compiled-cache",
        dest="cache",
        default=DEFAULT_DIR,
        help="the local cache (runtime.cache): stamps of verified artifacts, int8 weights, compiled packages",
    )
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) and globs ('**/*.jpg')")
    return p


class _Stdout:
    """JSON lines on stdout, UTF-8 whatever the locale, flushed per row so a pipe sees them as they come."""

    def __init__(self) -> None:
        sys.stdout.reconfigure(encoding="utf-8")
        self.count = 0

    def write(self, row: dict) -> None:
        sys.stdout.write(dump_line({c: row.get(c) for c in COLUMNS}))
        sys.stdout.flush()
        self.count += 1

    def __enter__(self):
        return self

    def __exit__(self, *_exc) -> None:
        return None


def main(argv=None) -> int:
    """Find the images, load the artifact once, caption in batches into the table; exit 1 if any image failed."""
    from runtime.captioner import LoadOptions, load_captioner
    from runtime.images import load_image

    args = _parser().parse_args(argv)
    out = check_out(args.out, overwrite=args.overwrite) if args.out else None
    images, skipped = gather(args.images)
    t0 = time.perf_counter()
    options = LoadOptions(backend=args.backend, quantize=args.quantize)
    captioner = load_captioner(args.artifact, args.device, options, cache_dir=args.cache)
    load_s = time.perf_counter() - t0
    try:
        decode = captioner.prepare(args.num_beams)["decode"]
    except CaptureFailed as exc:
        decode = captioner.decode_status()["decode"]
        print(
            f"warning: decoding on the eager loop (slower), the CUDA graphs could not be captured: {exc}",
            file=sys.stderr,
        )
    print(
        f"loaded {captioner.name} ({captioner.manifest['family']}, {captioner.manifest['dtype']}, {captioner.backend}"
        f"{', ' + captioner.quantize if captioner.quantize else ''}) on "
        f"{captioner.device} in {load_s:.1f} s, decode: {decode}",
        file=sys.stderr,
    )
    if skipped:
        print(f"skipped {skipped} file(s) that are not images (accepted: {HUMAN_LIST})", file=sys.stderr)
    model = {"model": captioner.name, "model_sha256": captioner.sha256}
    batch, failed, t0 = args.batch_size or captioner.max_batch, 0, time.perf_counter()
    with TableWriter(out) if out else _Stdout() as table, bar(len(images), "caption", unit="img") as progress:
        for start in range(0, len(images), batch):
            good, pixels = [], []
            for uri, key in images[start : start + batch]:
                try:
                    pixels.append(load_image(uri))
                    good.append((uri, key))
                except BadImage as exc:
                    failed += 1
                    table.write({"uri": uri, "key": key, "caption": None, "error": str(exc), **model})
                    progress.update(1)
            if not pixels:
                continue
            try:
                captions = captioner.caption(pixels, num_beams=args.num_beams)
            except (RuntimeError, ArtifactError) as exc:  # out of memory, a program failing on these inputs
                raise CaptionKitError(
                    f"the model failed on {', '.join(u for u, _ in good)}: {str(exc).strip().splitlines()[0][:300]}"
                ) from exc
            for (uri, key), caption in zip(good, captions):
                table.write({"uri": uri, "key": key, "caption": caption, "error": None, **model})
            progress.update(len(good))
            progress.set_postfix(failed=failed, refresh=False)
    seconds = time.perf_counter() - t0
    print(
        f"captioned {len(images) - failed} of {len(images)} images in {seconds:.1f} s "
        f"({(len(images) - failed) / seconds if seconds else 0:.1f} images/s), {failed} failed"
        f"{f'; wrote {out}' if out else ''}",
        file=sys.stderr,
    )
    return 1 if failed else 0
