"""BENCHMARKS.md's table for an agent run: the naive worker, the agent, and the pipeline and the model alone."""

from __future__ import annotations

from bench.report_run import heading

# (header, the run's key, its format); a run recorded before the pipeline alone was measured lacks three of them
COLUMNS = (
    ("naive worker img/s", "naive_images_per_s", "{:.2f}"),
    ("agent img/s", "agent_images_per_s", "{:.2f}"),
    ("pipeline alone img/s", "pipeline_alone_images_per_s", "{:.2f}"),
    ("model alone img/s", "model_alone_images_per_s", "{:.2f}"),
    ("agent vs naive", "agent_vs_naive", "{:.2f}x"),
    ("agent vs model alone", "agent_vs_model_alone", "{:.2f}"),
    ("bound", "bound", "{}"),
    ("agent vs the slower alone", "agent_vs_slower", "{:.2f}"),
)


def agent_table(key: str, section: dict) -> list[str]:
    """One run's table: the columns its section holds."""
    columns = [(header, form.format(section[name])) for header, name, form in COLUMNS if name in section]
    threads = f", {section['prefetch_threads']} download/decode threads" if section.get("prefetch_threads") else ""
    return heading(key, section) + [
        f"{section['images']} JPEGs 640x480 on the local AWS (moto); naive worker on {section['naive_images']} of "
        f"them; agent batch {section['batch_size']}{threads}, backend {section['backend']}"
        f"{', quantize ' + section['quantize'] if section.get('quantize') else ''}; agent captions equal to the "
        f"naive worker's (HF float32): {section.get('captions_equal_to_naive', '?')}/{section['naive_images']}.",
        "",
        "| " + " | ".join(h for h, _ in columns) + " |",
        "|---" * len(columns) + "|",
        "| " + " | ".join(c for _, c in columns) + " |",
        "",
    ]
