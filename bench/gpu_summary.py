"""`python -m bench.gpu_summary CASES.jsonl`: bench/gpu.sh's one-screen summary, from the lines its stages appended."""

from __future__ import annotations

import argparse
import sys

from bench.cases import read_cases

HEADERS = (
    "model",
    "case",
    "graphs",
    "eager",
    "HF eager",
    "HF static+compile",
    "graphs/HF",
    "graphs/HF static",
    "replays",
    "kernels|ops",
    "encoder ms",
    "ms/step",
    "peak MiB",
    "tokens",
)


def _ips(times: dict | None, images: int) -> float | None:
    return images / times["median_s"] if times and times.get("median_s") else None


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def decode_rows(records: list[dict]) -> list[tuple]:
    """One row per decode case: images/s per contender, ratios, what the static path ran, and token agreement."""
    static = {(r["section"], r["model"], r["case"]): r for r in records if r.get("contender") == "hf_static_compiled"}
    rows = []
    for r in records:
        if "graphs" not in r:
            continue
        n, times = r["images"], r["times"]
        graphs, eager, hf = (_ips(times.get(k), n) for k in ("ours_graphs", "ours_eager", "hf_eager"))
        other = static.get((r["section"], r["model"], r["case"]), {})
        hf_static = _ips(other.get("times"), n) if "times" in other else None
        ran, device = r["graphs"], r.get("device", {})
        same = r["identical_to_hf_eager"].get("ours_graphs")
        tokens = f"{'=' if r['graphs_equal_eager'] else 'DIFFER'} eager, {same}/{n} HF"
        path = str(ran["replays"]) if ran["replays"] or not ran["direct_steps"] else f"direct {ran['direct_steps']}"
        gate = " (gate)" if r["section"].endswith("_tiny") else ""
        rows.append(
            (
                r["model"] + gate,
                r["case"],
                _fmt(graphs),
                _fmt(eager),
                _fmt(hf),
                _fmt(hf_static) if hf_static else other.get("error", "-")[:20] if other else "-",
                _fmt(graphs / hf if graphs and hf else None, 2),
                _fmt(graphs / hf_static if graphs and hf_static else None, 2),
                path,
                str(device.get("kernels", device.get("aten_ops", "-"))),
                _fmt(device.get("encoder_ms")),
                _fmt(device.get("ms_per_step"), 2),
                _fmt(device.get("peak_memory_mib"), 0),
                tokens,
            )
        )
    return rows


def other_lines(records: list[dict]) -> list[str]:
    """The bfloat16 and Qwen stages' cases, one line each."""
    lines = []
    for r in records:
        if r.get("stage") == "model":
            lines.append(
                f"{r['model']} {r['dtype']} {r['case']}: HF {r['hf_s']:.3f} s, ours {r['ours_s']:.3f} s "
                f"({r['speedup_vs_hf']:.2f}x, {r['identical_to_hf']}/{r['images']} same, {r['decode']})"
            )
        elif r.get("stage") == "qwen":
            lines.append(
                f"Qwen2-VL widths {r['dtype']} batch {r['batch']}: HF {r['hf_generate_s']} s, ours "
                f"{r['runtime_s']} s, same tokens {r['same_tokens']}, {r['decode']}"
            )
    return lines


def render(records: list[dict]) -> str:
    rows = decode_rows(records)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        text = "\n".join(" | ".join(row) for row in [HEADERS, *rows])
    else:
        table = Table(*HEADERS, title="decode: images/s (median), what the static path ran", box=None)
        for row in rows:
            table.add_row(*row)
        console = Console(file=None, width=200, record=True, force_terminal=False)
        with console.capture() as captured:
            console.print(table)
        text = captured.get()
    return "\n".join([text.rstrip(), *other_lines(records)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_summary", description=__doc__)
    p.add_argument("cases", help="the JSON lines bench/gpu.sh's stages appended ($OUT/cases.jsonl)")
    args = p.parse_args(argv)
    try:
        records = read_cases(args.cases)
    except FileNotFoundError:
        print(f"no cases were written ({args.cases} does not exist)", file=sys.stderr)
        return 1
    print(render(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
