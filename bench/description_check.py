"""`python -m bench.graph_cache_check --artifact A --device cuda`: the graph cache on a device, against torch's loader.

Loads the artifact three ways in one process: through torch (no cache), through torch writing the graph cache,
and from the cache; compares the tokens of each (greedy and the artifact's beams) and reports the load times.
The tests check this on CPU; `bench/gpu.sh` runs it on the GPU, where the cached path moves each weight to the
device itself instead of torch's `move_to_device_pass`. Exits 1 if any token differs.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.graph_cache_check", description=__doc__)
    p.add_argument("--artifact", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="")
    p.add_argument("--section", default="graph_cache_check")
    args = p.parse_args(argv)

    from export.cli import parity_images
    from runtime.captioner import load_captioner

    result: dict = {"artifact": args.artifact, "device": args.device}
    tokens = {}
    with tempfile.TemporaryDirectory() as cache:
        for kind, cache_dir in (("torch", None), ("torch_writing_cache", cache), ("cached", cache)):
            start = time.perf_counter()
            captioner = load_captioner(args.artifact, args.device, cache_dir=cache_dir)
            result[f"{kind}_load_s"] = round(time.perf_counter() - start, 3)
            pixels = captioner.preprocess(parity_images([], 4, seed=7))
            tokens[kind] = [captioner.generate_ids(pixels, beams) for beams in sorted({1, captioner.max_beams})]
        result["graph_entries"] = len(list(Path(cache, "graphs").glob("*.json")))
    result["tokens_equal"] = tokens["cached"] == tokens["torch"] == tokens["torch_writing_cache"]
    print(json.dumps(result))
    if args.out:
        from bench.model import write_section

        write_section(Path(args.out), args.section, result)
    return 0 if result["tokens_equal"] and result["graph_entries"] == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
