"""BENCHMARKS.md's appendix table for a `python -m bench.cpu_settings` run: each CPU setting against float32."""

from __future__ import annotations

from bench.report_run import heading


def cpu_settings_table(key: str, section: dict) -> list[str]:
    """One row per setting and image format: exact match, captions differing from float32, near-ties, speed."""
    what = (
        f"{section['images']} held-back demo images per format (seed {section['seed']}), greedy, the runtime's "
        f"batching; model time per setting in rotation, median of {section['runs']} (min-max)"
    )
    rows = []
    for name, row in section["settings"].items():
        for fmt, c in row["formats"].items():
            t = c["timing"]
            rows.append(
                f"| {name} | {fmt} | {c['exact_match']:.1%} | {c['differ_from_float32']} | "
                f"{c['near_ties']} | {c['smallest_top_two_gap']:.2g} | {c['images_per_s']:.0f} "
                f"({t['min_s']:.3f}-{t['max_s']:.3f} s) | {row['ratio_to_float32'][fmt]:.2f}x |"
            )
    return heading(key, section, what) + [
        "| setting | format | exact match | captions differing from float32 | of which near-ties | smallest top-two "
        "gap | images/s (min-max s) | vs float32 |",
        "|" + "---|" * 8,
        *rows,
        "",
    ]


def roofline_table(key: str, section: dict) -> list[str]:
    """One row per dtype and case (`python -m bench.roofline`): achieved GFLOP/s and GB/s against the matmul peak
    and copy bandwidth timed in the same rotation."""
    from bench.roofline import table

    ceilings = "; ".join(
        f"{dtype}: {d['ceiling']['cores']} cores x {d['ceiling']['ghz']} GHz x "
        f"{d['ceiling']['lanes']} lanes x 2 (FMA) x {d['ceiling']['fma_units']} FMA units = "
        f"{d['ceiling']['gflops']:.0f} GFLOP/s"
        + (" (the CPU has AMX, whose tiles are not in it)" if d["ceiling"].get("amx") else "")
        for dtype, d in section["dtypes"].items()
    )
    what = (
        f"{section['model']}, medians of {section['runs']} in rotation with a 4096^3 matmul and a 1 GiB copy; "
        f"arithmetic ceilings from the CPU's flags: {ceilings}"
    )
    return heading(key, section, what) + table(section) + [""]
