"""bench.report renders the results into BENCHMARKS.md's appendix only, run by run under the question each answers."""
from __future__ import annotations

import json
from pathlib import Path

from bench import report

REPO = Path(__file__).resolve().parents[2]
MACHINE = {"cpu": "AMD EPYC", "cores": 2, "torch": "2.13.0+cpu", "cpu_capability": "AVX2",
           "loadavg_1_5_15": [1.0, 1.0, 1.0], "cuda": None}
WALL = {"median_s": 40.0, "min_s": 39.0, "max_s": 41.0}


def _process_run(title: str | None = None) -> dict:
    run = {"date": "2026-12-01", "artifact": "/tmp/b16/model-float32-b8.pt2", "images": 32, "batch_size": 8,
           "runs": 3, "machine_before": MACHINE, "machine_after": MACHINE,
           "runtime": {"wall_s": WALL, "peak_rss_mib": 1900}, "hf": {"wall_s": WALL, "peak_rss_mib": 2200},
           "runtime_vs_hf": 1.0, "runtime_captions_equal": "32/32"}
    return {**run, "title": title} if title else run


def _soak_run() -> dict:
    return {"images": 10, "bad_inputs": 1, "faults_injected": 3, "agent_kills": 1, "records": 10, "lost": 0,
            "duplicated": 0, "wrong_records": 0, "dead_lettered": 0, "extra_attempts": 0, "seconds": 5.0,
            "agents": {"a": {"rss_start_kib": 61440, "rss_end_kib": 71680, "starts": 2}}}


def test_a_rerun_rewrites_only_the_appendix_and_keeps_the_report_around_it(tmp_path):
    results, doc = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    results.write_text(json.dumps({"soak": _soak_run(), "process_x": _process_run("Whole process, 32 images")}))
    head, tail = "# Benchmarks\n\n## Targets\n\nmet\n\n## Appendix\n\n", "\nafter the tables\n"
    doc.write_text(f"{head}{report.BEGIN}\nstale tables\n{report.END}{tail}")
    assert report.main(["--results", str(results), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(head + report.BEGIN) and text.endswith(report.END + tail) and "stale" not in text
    appendix = text[len(head):-len(tail)]
    assert appendix.index("### Load and whole process") < appendix.index("### Agent and soak")  # the report's order
    assert "#### Whole process, 32 images (2026-12-01)" in appendix
    assert "artifact `model-float32-b8.pt2`" in appendix and "/tmp/b16" not in appendix
    assert "run `process_x`" in appendix and "#### Soak (date not recorded)" in appendix


def test_gpu_runs_come_under_their_own_question_with_the_file_they_are_kept_in():
    gpu_run = {"date": "2026-11-30", "mode": "full", "runs": 5, "models": {},
               "machine_before": {**MACHINE, "cuda": "NVIDIA H200", "cores": 16}}
    text = report.render({"a.json": {"process_x": _process_run()}, "gpu.json": {"model_cuda": gpu_run, "note": "lent"}})
    assert text.index("### Load and whole process") > text.index("### Model level, GPU")
    assert "Runs kept in gpu.json: lent." in text and "NVIDIA H200 (16-core AMD EPYC host)" in text
    assert "### Model level, CPU" not in text


def test_the_committed_results_render_every_run_within_the_house_width():
    files = {name: json.loads((REPO / name).read_text()) for name in report.RESULTS}
    text = report.render(files)
    runs = [key for sections in files.values() for key, s in sections.items() if isinstance(s, dict)]
    flat = " ".join(text.split())  # a wrapped line reads the same
    assert all(f"run `{key}`" in flat for key in runs)
    assert all(len(line) <= 120 for line in text.splitlines() if not line.startswith(("|", "#")))


def test_the_committed_benchmarks_md_holds_the_appendix_as_rendered():
    files = {name: json.loads((REPO / name).read_text()) for name in report.RESULTS}
    assert f"{report.BEGIN}\n{report.render(files)}\n{report.END}" in (REPO / "BENCHMARKS.md").read_text()


def test_a_recorded_run_carries_the_date_it_was_taken(tmp_path):
    from datetime import date

    from bench.model import write_section

    write_section(tmp_path / "results.json", "soak", {"images": 1})
    soak = json.loads((tmp_path / "results.json").read_text())["soak"]
    assert soak == {"date": date.today().isoformat(), "images": 1}
