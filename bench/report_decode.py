"""BENCHMARKS.md's table for a bench.gpu_decode run: images/s per contender, tokens compared, cost per 1,000 images."""

from __future__ import annotations

from bench.report_run import heading

COLUMNS = (
    ("ours_graphs", "ours, static"),
    ("ours_eager", "ours, eager loop"),
    ("hf_eager", "HF eager"),
    ("hf_static_compiled", "HF static + compile"),
)


def decode_tables(key: str, section: dict) -> list[str]:
    """One table per model: images/s (median of the runs), whether tokens agree, USD per 1,000 images."""
    priced = list(section.get("prices", {}))
    lines = heading(key, section, f"{section['mode']} run, median of {section['runs']}, images/s")
    for name, model in section["models"].items():
        static = model.get("hf_static_compiled", {})
        lines += [
            f"**{name}** (static path: buckets, step {_static_step(model)}, EOS checked every "
            f"{model['eos_every']} steps; HF static + compile: {static.get('status', 'not run')})",
            "",
            "| case | " + " | ".join(label for _, label in COLUMNS) + " | static = eager | equal to HF eager | "
            "static path ran | " + " | ".join(f"static USD/1k img at {p} prices" for p in priced) + " |",
            "|---" * (len(COLUMNS) + 4 + len(priced)) + "|",
        ]
        for case, c in model["cases"].items():
            ips = dict(c["images_per_s"])
            other = static.get("cases", {}).get(case, {})
            ips.update(other.get("images_per_s", {}))
            cells = [
                f"{ips[k]:.1f}" if k in ips else ("error" if "error" in other and k.startswith("hf_s") else "-")
                for k, _ in COLUMNS
            ]
            same = dict(c["identical_to_hf_eager"])
            if "identical_to_hf_eager" in other:
                same["hf_static_compiled"] = other["identical_to_hf_eager"]
            agree = ", ".join(f"{k} {v}/{c['images']}" for k, v in same.items())
            costs = [f"{c['usd_per_1000_images']['ours_graphs'][p]:.4f}" for p in priced]
            lines.append(
                f"| {case} | " + " | ".join(cells) + f" | {'yes' if c['graphs_equal_eager'] else 'NO'} | "
                f"{agree} | {_ran(model, c)} | " + " | ".join(costs) + " |"
            )
        lines.append("")
    notes = "; ".join(f"{p} ${v['usd_per_hour']}/h ({v['note']})" for p, v in section.get("prices", {}).items())
    if notes:
        lines += [f"- Prices: {notes}, read {section.get('prices_read_on')}; costs assume this machine's speed.", ""]
    return lines


def _static_step(model: dict) -> str:
    """What the static column's step was, from what the run recorded (older runs recorded only the request)."""
    if "capture_requested" not in model:
        return "CUDA graphs requested, replays not recorded" if model["captured"] else "called directly (no capture)"
    if not model["capture_requested"]:
        return "called directly (no capture)"
    replayed = all(c["graphs"]["replays"] and not c["graphs"]["direct_steps"] for c in model["cases"].values())
    return "replayed as CUDA graphs" if replayed else "CUDA graphs requested but NOT replayed in every case"


def _ran(model: dict, case: dict) -> str:
    """The static column's path for one case: graph replays, the bucket, device timings and kernels per replay."""
    ran = case.get("graphs")
    if ran is None:
        return "not recorded"
    if model.get("capture_requested") and not ran["replays"]:
        return f"NO replays ({ran['decode']})"
    device = case.get("device", {})
    parts = [
        f"{ran['replays'] or ran['direct_steps']} {'replays' if ran['replays'] else 'direct steps'}",
        f"bucket {ran['bucket']}",
    ]
    if device.get("ms_per_step") is not None:
        parts.append(f"encoder {device['encoder_ms']:.1f} ms, {device['ms_per_step']:.2f} ms/step")
    if "kernels" in device:
        parts.append(f"{device['kernels']} kernels/replay")
    if device.get("peak_memory_mib") is not None:
        parts.append(f"peak {device['peak_memory_mib']:.0f} MiB")
    return ", ".join(parts)
