"""bench.report renders the results into BENCHMARKS.md's appendix only, run by run under the question each answers."""

from __future__ import annotations

import json
from pathlib import Path

from bench import report

REPO = Path(__file__).resolve().parents[2]
MACHINE = {
    "cpu": "AMD EPYC",
    "cores": 2,
    "torch": "2.13.0+cpu",
    "cpu_capability": "AVX2",
    "loadavg_1_5_15": [1.0, 1.0, 1.0],
    "cuda": None,
}
WALL = {"median_s": 40.0, "min_s": 39.0, "max_s": 41.0}


def _process_run(title: str | None = None) -> dict:
    run = {
        "date": "2026-12-01",
        "artifact": "/tmp/b16/model-float32-b8.pt2",
        "images": 32,
        "batch_size": 8,
        "runs": 3,
        "machine_before": MACHINE,
        "machine_after": MACHINE,
        "runtime": {"wall_s": WALL, "peak_rss_mib": 1900},
        "hf": {"wall_s": WALL, "peak_rss_mib": 2200},
        "runtime_vs_hf": 1.0,
        "runtime_captions_equal": "32/32",
    }
    return {**run, "title": title} if title else run


def _soak_run() -> dict:
    return {
        "images": 10,
        "bad_inputs": 1,
        "faults_injected": 3,
        "agent_kills": 1,
        "records": 10,
        "lost": 0,
        "duplicated": 0,
        "wrong_records": 0,
        "dead_lettered": 0,
        "extra_attempts": 0,
        "seconds": 5.0,
        "agents": {"a": {"rss_start_kib": 61440, "rss_end_kib": 71680, "starts": 2}},
    }


def test_a_rerun_rewrites_only_the_appendix_and_keeps_the_report_around_it(tmp_path):
    results, doc = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    results.write_text(json.dumps({"soak": _soak_run(), "process_x": _process_run("Whole process, 32 images")}))
    head, tail = "# Benchmarks\n\n## Targets\n\nmet\n\n## Appendix\n\n", "\nafter the tables\n"
    doc.write_text(f"{head}{report.BEGIN}\nstale tables\n{report.END}{tail}")
    assert report.main(["--results", str(results), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(head + report.BEGIN) and text.endswith(report.END + tail) and "stale" not in text
    appendix = text[len(head) : -len(tail)]
    assert appendix.index("### Load and whole process") < appendix.index("### Agent and soak")  # the report's order
    assert "#### Whole process, 32 images (2026-12-01)" in appendix
    assert "artifact `model-float32-b8.pt2`" in appendix and "/tmp/b16" not in appendix
    assert "run `process_x`" in appendix and "#### Soak (date not recorded)" in appendix


def test_gpu_runs_come_under_their_own_question_with_the_file_they_are_kept_in():
    gpu_run = {
        "date": "2026-11-30",
        "mode": "full",
        "runs": 5,
        "models": {},
        "machine_before": {**MACHINE, "cuda": "NVIDIA H200", "cores": 16},
    }
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


def _agent_run(**extra) -> dict:
    return {
        "date": "2026-12-02",
        "images": 48,
        "naive_images": 16,
        "batch_size": 8,
        "backend": "exported",
        "quantize": None,
        "captions_equal_to_naive": 16,
        "naive_images_per_s": 0.26,
        "agent_images_per_s": 0.86,
        "model_alone_images_per_s": 0.88,
        "agent_vs_naive": 3.27,
        "agent_vs_model_alone": 0.98,
        **extra,
    }


def test_an_agent_run_shows_the_pipeline_alone_the_bound_and_the_ratio_to_the_slower_and_older_runs_still_render():
    text = report.render(
        {
            "r.json": {
                "agent_new": _agent_run(
                    prefetch_threads=2, pipeline_alone_images_per_s=31.5, bound="model", agent_vs_slower=0.98
                ),
                "agent_old": _agent_run(),
            }
        }
    )
    new, old = text.split("run `agent_new`")[1].split("run `agent_old`")
    assert "agent batch 8, 2 download/decode threads, backend exported" in " ".join(new.split())  # prose wraps
    assert (
        "| naive worker img/s | agent img/s | pipeline alone img/s | model alone img/s | agent vs naive "
        "| agent vs model alone | bound | agent vs the slower alone |"
    ) in new
    assert "| 0.26 | 0.86 | 31.50 | 0.88 | 3.27x | 0.98 | model | 0.98 |" in new
    assert "agent batch 8, backend exported" in old and "pipeline" not in old
    assert "| 0.26 | 0.86 | 0.88 | 3.27x | 0.98 |" in old


def _model_run(date: str, exported: float, bf16_s: float | None = None) -> dict:
    times = {
        "hf": {"median_s": 2.0, "min_s": 2.0, "max_s": 2.0},
        "exported": {"median_s": 2.0 / exported, "min_s": 1.0, "max_s": 1.0},
    }
    case = {
        "times": times,
        "speedup_vs_hf": {"exported": exported},
        "identical_to_hf": {"exported": 8},
        "images": 8,
        "mean_new_tokens": 20.0,
    }
    dtypes = {"float32": {"artifact_mib": 1.0, "cases": {"greedy@batch8": case}}}
    if bf16_s:
        bf16 = {
            "times": {"hf": times["hf"], "exported": {"median_s": bf16_s, "min_s": 1.0, "max_s": 1.0}},
            "speedup_vs_hf": {"exported": 1.0},
            "identical_to_hf": {"exported": 8},
            "images": 8,
            "mean_new_tokens": 20.0,
        }
        dtypes["bfloat16"] = {"artifact_mib": 0.5, "cases": {"greedy@batch8": bf16}}
    best = {
        "greedy@batch8": {
            "best": "exported float32",
            "speedup": exported,
            "captions_agree": 8,
            "images": 8,
            "best_all_captions_equal": {"best": "exported float32", "speedup": exported},
        }
    }
    return {
        "date": date,
        "mode": "full",
        "runs": 3,
        "machine_before": MACHINE,
        "models": {"m": {"dtypes": dtypes, "best_vs_hf_float32": best}},
    }


def test_each_model_gets_a_chart_of_its_latest_cpu_run_linked_under_its_question(tmp_path):
    import xml.etree.ElementTree as ET

    results = {"r.json": {"model_old": _model_run("2026-11-01", 9.0), "model_new": _model_run("2026-12-01", 1.5, 0.5)}}
    appendix, svgs = report.render_with_charts(results)
    assert list(svgs) == ["docs/bench/model-cpu-m.svg"]
    assert "![m against HF generate](docs/bench/model-cpu-m.svg)" in appendix
    assert appendix.index("### Model level, CPU") < appendix.index("![m against")
    svg = ET.fromstring(svgs["docs/bench/model-cpu-m.svg"])
    bars = [
        el.find("{http://www.w3.org/2000/svg}title").text
        for el in svg.iter("{http://www.w3.org/2000/svg}rect")
        if el.find("{http://www.w3.org/2000/svg}title") is not None
    ]
    # the newer run only; the bfloat16 export against HF float32: 2.0 s / 0.5 s
    assert bars == ["exported, greedy@batch8: 1.50x", "bfloat16 export vs HF float32, greedy@batch8: 4.00x"]
    assert "model_new" in svgs["docs/bench/model-cpu-m.svg"] and "9.00" not in svgs["docs/bench/model-cpu-m.svg"]


def test_the_committed_charts_are_the_ones_the_results_draw():
    names = [n for n in report.RESULTS if (REPO / n).exists()]
    _, svgs = report.render_with_charts({n: json.loads((REPO / n).read_text()) for n in names})
    assert svgs and all((REPO / path).read_text() == svg for path, svg in svgs.items())


def _bar_titles(svg_text: str) -> list[str]:
    import xml.etree.ElementTree as ET

    ns = "{http://www.w3.org/2000/svg}"
    return [
        el.find(f"{ns}title").text
        for el in ET.fromstring(svg_text).iter(f"{ns}rect")
        if el.find(f"{ns}title") is not None
    ]


def _peers_run(date: str, ours: float) -> dict:
    def times(median: float) -> dict:
        return {"median_s": median, "min_s": median, "max_s": median, "runs": 3}

    return {
        "date": date,
        "model": "m",
        "runs": 3,
        "versions": {"torch": "2.13.0+cpu"},
        "labels": {"hf_eager": "HF eager", "ours": "ours", "openvino": "OpenVINO"},
        "machine_before": MACHINE,
        "machine_after": {**MACHINE, "loadavg_1_5_15": [2.5, 1.0, 1.0]},
        "cases": {
            f"greedy@batch{b}": {
                "images": b,
                "times": {"hf_eager": times(2.0), "ours": times(2.0 / (ours * b))},
                "speedup_vs_hf": {"hf_eager": 1.0, "ours": ours * b},
                "identical_to_hf": {"ours": b},
                "errors": {"openvino": "RuntimeError: no"},
            }
            for b in (1, 8)
        },
        "errors": {},
    }


def test_the_latest_peers_run_is_charted_by_batch_without_the_baseline_or_a_failed_peer():
    results = {"r.json": {"peers_old": _peers_run("2026-11-01", 5.0), "peers_new": _peers_run("2026-12-07", 0.25)}}
    appendix, svgs = report.render_with_charts(results)
    assert "![m against its CPU peers](docs/bench/peers-cpu-m.svg)" in appendix
    assert appendix.index("### CPU against its peers") < appendix.index("![m against its CPU peers]")
    svg = svgs["docs/bench/peers-cpu-m.svg"]
    assert _bar_titles(svg) == ["ours, greedy, batch 1: 0.25x", "ours, greedy, batch 8: 2.00x"]
    assert "peers_new" in svg and "load 1.0-2.5" in svg and "OpenVINO" not in svg


def test_the_latest_roofline_run_gets_a_chart_per_dtype_in_shares_of_the_limit():
    case = {"batch": 8, "encoder_of_peak": 0.78, "decode_of_peak": 0.06, "decode_of_bandwidth": 0.24}
    run = {"date": "2026-12-07", "model": "m", "dtypes": {"float32": {"cases": {"greedy@batch8": case}}}}
    older = {**run, "date": "2026-11-01", "dtypes": {"float32": {"cases": {}}, "bfloat16": run["dtypes"]["float32"]}}
    charts = report.roofline_charts([("r.json", "roofline_quiet", run), ("r.json", "roofline_old", older)])
    # float32 from the latest run; bfloat16 from the older one, the only run that measured it
    assert list(charts) == ["docs/bench/roofline-cpu-m-float32.svg", "docs/bench/roofline-cpu-m-bfloat16.svg"]
    assert "roofline_old" in charts["docs/bench/roofline-cpu-m-bfloat16.svg"][1]
    title, svg = charts["docs/bench/roofline-cpu-m-float32.svg"]
    assert title == "m float32 against the CPU's limit" and "roofline_quiet" in svg
    assert _bar_titles(svg) == [
        "encoder, of the matmul peak, greedy, batch 8: 78%",
        "decode, of the matmul peak, greedy, batch 8: 6%",
        "decode, of the copy bandwidth, greedy, batch 8: 24%",
    ]  # a share the run did not record (the whole caption here) has no bar
    assert ">100%<" in svg and "dashed line: 100% = the limit measured beside it" in svg


def test_legend_entries_wrap_to_new_rows_instead_of_running_into_each_other():
    from bench import charts

    names = [f"contender number {n} with a long name" for n in range(6)]
    places = charts._legend(names)
    rows: dict[int, list[tuple[float, str]]] = {}
    for name, (x, row) in places.items():
        rows.setdefault(row, []).append((x, name))
    assert len(rows) > 1
    for entries in rows.values():
        for (x, name), (next_x, _) in zip(entries, entries[1:]):
            assert x + 14 + len(name) * 6.2 <= next_x  # this name's text ends before the next swatch
        x, name = entries[-1]
        assert x + 14 + len(name) * 6.2 <= charts.WIDTH
    svg = charts.bars("t", {"g": {n: 1.0 for n in names}}, "base")
    assert f'height="{charts.HEIGHT + 16 * max(r for _, r in places.values())}"' in svg


def test_a_missing_results_file_is_one_line_naming_it_and_the_doc_is_left_alone(tmp_path, capsys):
    import pytest

    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n")
    with pytest.raises(SystemExit) as exit:
        report.main(["--results", str(tmp_path / "none.json"), "--doc", str(doc)])
    assert exit.value.code == 2
    assert f"no results file {tmp_path / 'none.json'}" in capsys.readouterr().err
    assert doc.read_text() == "# Benchmarks\n"
