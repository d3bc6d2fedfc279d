"""`python -m bench.cpu_settings`: which CPU setting to recommend, by the demo captioner's exact match and speed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from demo.accuracy import FORMATS, HELD_BACK_IMAGES, HELD_BACK_SEED, exact_match, held_back
from export.parity import first_difference, parted_at_near_tie
from runtime.captioner import LoadOptions, load_captioner
from runtime.decode.state import Trace

# setting: (which artifact, load-time quantization); int8 and fp16 apply to float32 artifacts only
SETTINGS = {
    "float32": ("float32", None),
    "int8": ("float32", "int8"),
    "fp16": ("float32", "fp16"),
    "bfloat16": ("bfloat16", None),
}
REFERENCE = "float32"


def run(artifacts: dict[str, Path], images: int, seed: int, formats: tuple[str, ...], runs: int) -> dict:
    """Every setting whose artifact is given, on the same held-back images: accuracy and captions against float32
    (near-ties by the parity gate's rule, on the setting's own trace), and images/s timed side by side."""
    from bench.timing import interleaved

    captioners = {
        name: load_captioner(artifacts[kind], device="cpu", options=LoadOptions(quantize=quantize))
        for name, (kind, quantize) in SETTINGS.items()
        if kind in artifacts
    }
    rows = {
        name: {
            "artifact": str(artifacts[SETTINGS[name][0]]),
            "dtype": c.manifest["dtype"],
            "quantize": c.quantize,
            "formats": {},
        }
        for name, c in captioners.items()
    }
    timed = {}
    for fmt in formats:
        pictures, wants = held_back(images, seed, fmt)
        pixels = {name: c.preprocess(pictures) for name, c in captioners.items()}
        served = {}  # the serving path's ids (no trace), kept from the timed runs
        contenders = {name: _keeper(served, name, c, pixels[name]) for name, c in captioners.items()}
        timing = interleaved(contenders, runs)
        reference = served[REFERENCE]
        for name, c in captioners.items():
            ids, trace = traced(c, pixels[name])
            value, misses = exact_match([c.text.decode(i) for i in ids], wants)
            parted = [
                (i, first_difference(ref, mine)) for i, (ref, mine) in enumerate(zip(reference, ids)) if ref != mine
            ]
            tied = [parted_at_near_tie(trace, i, step, c.manifest["dtype"]) for i, step in parted]
            near = sum(tied)
            examples = [
                f"image {i}: float32 {c.text.decode(reference[i])!r}, {name} {c.text.decode(ids[i])!r}, "
                f"parted at step {step}, smallest top-two gap up to there "
                f"{min(trace.gaps[i][: step + 1], default=float('inf')):.2e}, {'near-tie' if t else 'real'}"
                for (i, step), t in sorted(zip(parted, tied), key=lambda pt: pt[1])
            ]
            rows[name]["formats"][fmt] = {
                "images": images,
                "exact_match": round(value, 4),
                "misses": misses[:5],
                "differ_from_float32": len(parted),
                "near_ties": near,
                "real_differences": len(parted) - near,
                "differences": examples[:5],
                "smallest_top_two_gap": min((g for gaps in trace.gaps for g in gaps), default=None),
                "traced_equals_served": ids == served[name],
                "timing": timing[name],
                "images_per_s": images / timing[name]["median_s"],
            }
        timed[fmt] = timing
    for name, row in rows.items():
        row["ratio_to_float32"] = {
            fmt: timed[fmt][REFERENCE]["median_s"] / timed[fmt][name]["median_s"] for fmt in formats
        }
    return rows


def traced(captioner, pixels) -> tuple[list[list[int]], Trace]:
    """Token ids and the decode's trace, one `max_batch` chunk at a time: a decode starts its trace afresh."""
    ids, whole = [], Trace()
    for start in range(0, pixels.shape[0], captioner.max_batch):
        part = Trace()
        ids.extend(captioner.generate_ids(pixels[start : start + captioner.max_batch], trace=part))
        whole.gaps.extend(part.gaps)
        whole.top.extend(part.top)
    return ids, whole


def _keeper(served: dict, name: str, captioner, pixels):
    def caption() -> None:
        served[name] = captioner.generate_ids(pixels)

    return caption


HEADERS = ("setting", "format", "exact match", "differ from float32", "of which near-ties", "images/s", "vs float32")


def table_rows(rows: dict) -> list[tuple[str, ...]]:
    """One row per setting and format: exact match, captions differing from float32 (near-ties), speed."""
    return [
        (
            name,
            fmt,
            f"{cell['exact_match']:.2%}",
            str(cell["differ_from_float32"]),
            str(cell["near_ties"]),
            f"{cell['images_per_s']:.1f}",
            f"{row['ratio_to_float32'][fmt]:.2f}x",
        )
        for name, row in rows.items()
        for fmt, cell in row["formats"].items()
    ]


def table(rows: dict) -> str:
    """The rows as a plain-text table."""
    from rich.console import Console
    from rich.table import Table

    out = Table(*HEADERS, box=None)
    for row in table_rows(rows):
        out.add_row(*row)
    console = Console(width=140, force_terminal=False)
    with console.capture() as captured:
        console.print(out)
    return captured.get()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_settings", description=__doc__)
    p.add_argument("--artifact", default="dist/demo.pt2", help="the float32 export (float32, int8, fp16)")
    p.add_argument("--bf16-artifact", default="dist/demo-bf16.pt2", help="the bfloat16 export (skipped if absent)")
    p.add_argument("--images", type=int, default=HELD_BACK_IMAGES)
    p.add_argument("--seed", type=int, default=HELD_BACK_SEED)
    p.add_argument("--formats", nargs="*", default=list(FORMATS))
    p.add_argument("--runs", type=int, default=3, help="timed repetitions per setting (medians), after one warm-up")
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--section", default="cpu_settings_demo")
    args = p.parse_args(argv)
    from bench.model import machine, write_section

    artifacts = {"float32": Path(args.artifact)}
    if Path(args.bf16_artifact).exists():
        artifacts["bfloat16"] = Path(args.bf16_artifact)
    else:
        print(
            f"no bfloat16 artifact at {args.bf16_artifact}: bfloat16 skipped "
            "(make it with `python -m export --model demo-model --out dist/demo-bf16.pt2 --dtype bfloat16`)",
            file=sys.stderr,
        )
    before = machine()
    rows = run(artifacts, args.images, args.seed, tuple(args.formats), args.runs)
    write_section(
        Path(args.out),
        args.section,
        {
            "artifact": args.artifact,
            "bf16_artifact": str(artifacts.get("bfloat16", "")),
            "images": args.images,
            "seed": args.seed,
            "runs": args.runs,
            "machine_before": before,
            "machine_after": machine(),
            "settings": rows,
        },
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
