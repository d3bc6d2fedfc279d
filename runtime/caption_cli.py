"""`python -m runtime caption`: caption image files with a .pt2, one JSON object per line."""
from __future__ import annotations

import argparse
import json
import sys
import time

from runtime.cache import DEFAULT_DIR
from runtime.errors import BadImage, CaptionKitError, CaptureFailed


def main(argv=None) -> int:
    """Load the artifact once, caption the images in batches, print JSON lines; bad images get an error line."""
    from runtime.captioner import LoadOptions, load_captioner
    from runtime.images import load_image

    p = argparse.ArgumentParser(prog="python -m runtime caption", description=__doc__)
    p.add_argument("--artifact", required=True, help="path to the .pt2")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--num-beams", type=int, default=None, help="default: the artifact's generation settings")
    p.add_argument("--batch-size", type=int, default=None, help="default: the artifact's max batch")
    p.add_argument("--backend", default="exported", choices=["exported", "aoti"],
                   help="aoti: compile the programs with AOTInductor for this device (cached), else the exported ones")
    p.add_argument("--quantize", default=None, choices=["int8", "fp16"],
                   help="CPU: run the linear layers on fbgemm int8 / float16-weight kernels "
                        "(faster; captions may differ)")
    p.add_argument("--cache", "--compiled-cache", dest="cache", default=DEFAULT_DIR,
                   help="the local cache (runtime.cache): stamps of verified artifacts, int8 weights, "
                        "compiled packages")
    p.add_argument("images", nargs="+")
    args = p.parse_args(argv)
    try:
        t0 = time.perf_counter()
        options = LoadOptions(backend=args.backend, quantize=args.quantize)
        captioner = load_captioner(args.artifact, args.device, options, cache_dir=args.cache)
        load_s = time.perf_counter() - t0
        try:
            decode = captioner.prepare(args.num_beams)["decode"]
        except CaptureFailed as exc:
            decode = captioner.decode_status()["decode"]
            print(f"warning: decoding on the eager loop (slower), the CUDA graphs could not be captured: {exc}",
                  file=sys.stderr)
    except (CaptionKitError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"loaded {captioner.name} ({captioner.manifest['family']}, {captioner.manifest['dtype']}, {captioner.backend}"
          f"{', ' + captioner.quantize if captioner.quantize else ''}) on "
          f"{captioner.device} in {load_s:.1f} s, decode: {decode}", file=sys.stderr)
    batch = args.batch_size or captioner.max_batch
    failed = 0
    for start in range(0, len(args.images), batch):
        paths = args.images[start:start + batch]
        good, images = [], []
        for path in paths:
            try:
                images.append(load_image(path))
                good.append(path)
            except BadImage as exc:
                failed += 1
                print(json.dumps({"image": path, "error": str(exc)}), flush=True)
        if not images:
            continue
        t0 = time.perf_counter()
        try:
            captions = captioner.caption(images, num_beams=args.num_beams)
        except (RuntimeError, CaptionKitError) as exc:  # out of memory, a program that fails: one line, not a trace
            print(f"error: the model failed on {', '.join(paths)}: {str(exc).strip().splitlines()[0][:300]}",
                  file=sys.stderr)
            return 1
        per_image_ms = 1000 * (time.perf_counter() - t0) / len(images)
        for path, caption in zip(good, captions):
            print(json.dumps({"image": path, "caption": caption, "model": captioner.name,
                              "ms_per_image": round(per_image_ms, 1)}), flush=True)
    return 1 if failed else 0
