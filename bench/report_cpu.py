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
    cases = [c for d in section["dtypes"].values() for c in d["cases"].values()]
    read = " and a sum over it (read only)" if cases and all("read_gb_s" in c for c in cases) else ""
    what = (
        f"{section['model']}, medians of {section['runs']} in rotation with a 4096^3 matmul, a 1 GiB copy{read}; "
        f"arithmetic ceilings from the CPU's flags: {ceilings}"
    )
    return heading(key, section, what) + table(section) + [""]


def packed_linears_table(key: str, section: dict) -> list[str]:
    """One row per case (`python -m bench.packed_linears`): the decode layout on oneDNN-packed weights against the
    transposed copies, the same artifact loaded both ways."""
    from bench.packed_linears import table

    what = (
        "the artifact loaded twice (pack_linears off: float32 on the transposed copies, bfloat16 as exported; on: "
        f"packed), medians of {section['runs']} in rotation"
    )
    return heading(key, section, what) + table(section) + [""]


def _peer_errors(section: dict) -> list[str]:
    """Each peer's error quoted once, with where it happened (loading, or the cases it failed in)."""
    where: dict[tuple[str, str], list[str]] = {}
    for name, text in section.get("errors", {}).items():
        where.setdefault((name, text), []).append("load or first call")
    for case, c in section["cases"].items():
        for name, text in c.get("errors", {}).items():
            where.setdefault((name, text), []).append(case)
    labels = section.get("labels", {})
    return [
        f"- {labels.get(name, name)} failed ({', '.join(places)}): `{text}`" for (name, text), places in where.items()
    ]


def peers_table(key: str, section: dict) -> list[str]:
    """One row per case and contender (`python -m bench.peers`): median seconds, ratio to HF eager, captions equal
    to HF eager's, tokens per image (a faster row that stopped earlier is not faster); then each error, once."""
    labels = section.get("labels", {})
    rows = []
    for case, c in section["cases"].items():
        for name, t in c["times"].items():
            same = c["identical_to_hf"].get(name)
            agree = "-" if same is None else f"{same}/{c['images']}"
            versus = c["speedup_vs_hf"].get(name)
            rows_of = c.get("tokens", {}).get(name) or []
            length = f"{sum(map(len, rows_of)) / len(rows_of):.1f}" if rows_of else "-"
            rows.append(
                f"| {case} | {labels.get(name, name)} | {t['median_s']:.3f} ({t['min_s']:.3f}-"
                f"{t['max_s']:.3f}) | {'-' if versus is None else f'{versus:.2f}x'} | {agree} | {length} |"
            )
    installed = ", ".join(f"{name} {v}" for name, v in section["versions"].items() if v)
    missing = [name for name, v in section["versions"].items() if not v]
    what = (
        f"{section['model']}, greedy, medians of {section['runs']} (min-max) in rotation, seconds per batch, "
        f"one process; {installed}"
        + (f" ({', '.join(missing)} not installed)" if missing else "")
        + f"; ORT spin-waiting {'on' if section.get('ort_spinning') else 'off'}"
    )
    compiled = section.get("hf_compiled") or {}
    notes = [
        f"- {labels.get(name, name)}: transformers {'compiled' if on else 'did not compile'} the forward "
        "(checked on the model after the first call)"
        for name, on in compiled.items()
    ]
    return heading(key, section, what) + [
        "| case | contender | median s (min-max) | vs HF eager | captions equal to HF eager | tokens/img |",
        "|" + "---|" * 6,
        *rows,
        "",
        *notes,
        *_peer_errors(section),
        "",
    ]
