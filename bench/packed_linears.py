"""`python -m bench.packed_linears`: the CPU decode step's linears on oneDNN-packed weights against what they replace
(float32: the decode layout's transposed copies, several rows; bfloat16: the exported linears, every row), one
artifact loaded both ways and timed in rotation (medians), tokens compared.

The decode step is the part of a caption furthest from this CPU's limit (`bench.roofline`: 2-16% of the float32
peak at batch 1 and 8); its linears stream every weight each step, and oneDNN's packed layout reads them faster
when a step has several rows. In float32 one row keeps the artifact's own weight either way, so batch 1 greedy is the
control; bfloat16 runs packed from one row.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from bench.timing import interleaved, ratio

NAMES = ("unpacked", "packed")


def run(artifact: Path, batches: list[int], beams: list[int], runs: int) -> dict:
    """{case: {timing, speedup, captions_equal, images}} for each batch and beam count."""
    from bench.model import bench_images
    from runtime import LoadOptions, load_captioner

    captioners = {
        "unpacked": load_captioner(artifact, device="cpu", options=LoadOptions(pack_linears=False)),
        "packed": load_captioner(artifact, device="cpu", options=LoadOptions(pack_linears=True)),
    }
    first = captioners["unpacked"]
    rows = {}
    for batch in batches:
        pixels = first.preprocess(bench_images("vit-gpt2-base", batch)).to(first.dtype)
        for beam in beams:
            ids = {name: c.generate_ids(pixels, num_beams=beam) for name, c in captioners.items()}
            # generate_ids runs under inference_mode itself
            calls = {name: functools.partial(c.generate_ids, pixels, num_beams=beam) for name, c in captioners.items()}
            timing = interleaved(calls, runs)
            rows[f"{'greedy' if beam == 1 else f'beam{beam}'}@batch{batch}"] = {
                "timing": timing,
                "speedup": round(ratio(timing["unpacked"], timing["packed"]), 3),
                "captions_equal": sum(a == b for a, b in zip(ids["unpacked"], ids["packed"])),
                "images": batch,
            }
    return rows


def table(section: dict) -> list[str]:
    """One row per case: seconds per batch both ways (median, min-max), packed's speed-up, captions equal."""
    lines = [
        "| case | unpacked s (min-max) | packed s (min-max) | packed vs unpacked | captions equal |",
        "|---|---|---|---|---|",
    ]
    for case, row in section["cases"].items():
        cells = [f"{t['median_s']:.3f} ({t['min_s']:.3f}-{t['max_s']:.3f})" for t in (row["timing"][n] for n in NAMES)]
        lines.append(
            f"| {case} | {cells[0]} | {cells[1]} | {row['speedup']:.2f}x | {row['captions_equal']}/{row['images']} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.packed_linears", description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True, help="a float32 .pt2 (the roofline's: ViT-GPT2 base, batch 8)")
    p.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    p.add_argument("--beams", type=int, nargs="*", default=[1, 4])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--section", default="packed_linears_vit_gpt2_base")
    args = p.parse_args(argv)
    from bench.model import machine, write_section
    from runtime.passes.decode_layout import packed_linears

    if not packed_linears():
        print("this torch has no oneDNN linear packing: nothing to compare", file=sys.stderr)
        return 2
    before = machine()
    cases = run(Path(args.artifact), args.batches, args.beams, args.runs)
    section = {
        "artifact": args.artifact,
        "runs": args.runs,
        "machine_before": before,
        "machine_after": machine(),
        "cases": cases,
    }
    write_section(Path(args.out), args.section, section)
    print("\n".join(table(section)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
