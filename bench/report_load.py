"""BENCHMARKS.md tables for the load: phase by phase against from_pretrained, and whole processes against HF."""

from __future__ import annotations

from bench.report_run import heading

PHASES = (
    "import_s",
    "archive_open_s",
    "integrity_s",
    "deserialize_s",
    "weights_s",
    "graph_passes_s",
    "load_captioner_s",
    "from_pretrained_s",
    "first_caption_s",
    "total_s",
)
LABELS = (
    "imports",
    "archive open (+ torch's loader code, where it runs)",
    "integrity",
    "graph deserialization",
    "weights",
    "graph passes",
    "load_captioner (integrity..passes)",
    "from_pretrained",
    "warm-up: first caption",
    "process total",
)
RATIOS = ("_vs_hf", "_vs_hf_one", "_equal")  # the process section's keys that hold a ratio or a count of equal captions


def _m(row: dict, key: str) -> str:
    return f"{row[key]['median_s']:.2f}" if key in row else "-"


def load_tables(key: str, section: dict) -> list[str]:
    variants = [v for v in section if isinstance(section[v], dict) and "total_s" in section[v]]
    what = f"Fresh process per measurement, variants in rotation, median of {section['runs']} (seconds)"
    lines = heading(key, section, what) + ["| phase | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for phase, label in zip(PHASES, LABELS):
        lines.append(f"| {label} | " + " | ".join(_m(section[v], phase) for v in variants) + " |")
    rss = (f"{section[v]['peak_rss_mib']['median_s']:.0f}" for v in variants)
    lines.append("| peak RSS MiB | " + " | ".join(rss) + " |")
    lines += [""] + [f"- `{v}`: {section[v]['about']}" for v in variants] + [""]
    return lines


def process_table(key: str, section: dict) -> list[str]:
    kinds = [k for k in section if isinstance(section[k], dict) and "wall_s" in section[k]]
    lines = heading(
        key,
        section,
        f"{section['images']} PNGs, batch {section['batch_size']}, whole processes in "
        f"rotation, median (min-max) of {section['runs']}",
    ) + ["| process | wall s | peak RSS MiB |", "|---|---|---|"]
    for kind in kinds:
        w = section[kind]["wall_s"]
        lines.append(
            f"| {kind} | {w['median_s']:.1f} ({w['min_s']:.1f}-{w['max_s']:.1f}) "
            f"| {section[kind]['peak_rss_mib']:.0f} |"
        )
    ratios = ", ".join(f"{k} {v}" for k, v in section.items() if k.endswith(RATIOS))
    lines += ["", f"Speed-ups (HF wall / ours) and captions equal: {ratios}", ""]
    return lines
