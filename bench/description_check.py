"""`python -m bench.description_check --artifact A --device cuda`: programs rebuilt from their description on a
device, against torch's loader with `move_to_device_pass` on the same file (one this machine exported).

Compares the tokens of both (greedy and the artifact's beams) and reports the load times; the tests check the same
on CPU, `bench/gpu.sh` runs it on the GPU. Exits 1 if any token differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.description_check", description=__doc__)
    p.add_argument("--artifact", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="")
    p.add_argument("--section", default="description_check")
    args = p.parse_args(argv)

    import torch
    from torch.export.passes import move_to_device_pass

    from export.cli import parity_images
    from runtime.artifact.pt2 import load_pt2
    from runtime.captioner import LoadOptions, load_captioner

    result: dict = {"artifact": Path(args.artifact).name, "device": args.device}
    start = time.perf_counter()
    captioner = load_captioner(args.artifact, args.device, LoadOptions(decode_layout=False))
    result["described_load_s"] = round(time.perf_counter() - start, 3)
    pixels = captioner.preprocess(parity_images([], 4, seed=7))
    beams = sorted({1, captioner.max_beams})
    described = [captioner.generate_ids(pixels, b) for b in beams]
    start = time.perf_counter()
    contents = load_pt2(args.artifact)  # a file exported here: torch's loader is safe for it, not for others
    device = torch.device(captioner.device)
    captioner.encoder, captioner.step = (
        (
            move_to_device_pass(contents.exported_programs[n], device)
            if device.type != "cpu"
            else contents.exported_programs[n]
        ).module()
        for n in ("encoder", "decoder_step")
    )
    result["torch_load_s"] = round(time.perf_counter() - start, 3)
    result["tokens_equal"] = described == [captioner.generate_ids(pixels, b) for b in beams]
    print(json.dumps(result))
    if args.out:
        from bench.model import write_section

        write_section(Path(args.out), args.section, result)
    return 0 if result["tokens_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
