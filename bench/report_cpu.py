"""BENCHMARKS.md's appendix table for a `python -m bench.cpu_settings` run: each CPU setting against float32."""
from __future__ import annotations

from bench.report_run import heading


def cpu_settings_table(key: str, section: dict) -> list[str]:
    """One row per setting and image format: exact match, captions differing from float32, near-ties, speed."""
    what = (f"{section['images']} held-back demo images per format (seed {section['seed']}), greedy, the runtime's "
            f"batching; model time per setting in rotation, median of {section['runs']} (min-max)")
    rows = []
    for name, row in section["settings"].items():
        for fmt, c in row["formats"].items():
            t = c["timing"]
            rows.append(f"| {name} | {fmt} | {c['exact_match']:.1%} | {c['differ_from_float32']} | "
                        f"{c['near_ties']} | {c['smallest_top_two_gap']:.2g} | {c['images_per_s']:.0f} "
                        f"({t['min_s']:.3f}-{t['max_s']:.3f} s) | {row['ratio_to_float32'][fmt]:.2f}x |")
    return heading(key, section, what) + [
        "| setting | format | exact match | captions differing from float32 | of which near-ties | smallest top-two "
        "gap | images/s (min-max s) | vs float32 |", "|" + "---|" * 8, *rows, ""]
