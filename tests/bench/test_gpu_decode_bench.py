"""bench.gpu_decode's arithmetic and report: images/s to dollars per 1,000 images, and its table in the GPU section."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bench import gpu_decode, gpu_summary, report
from bench.cases import read_cases
from stacks.prices import INSTANCE_PRICES

TIMES = {"median_s": 0.5, "min_s": 0.4, "max_s": 0.6, "iqr_s": 0.1, "runs": 5}
GPU = {
    "cpu": "Xeon",
    "cores": 16,
    "torch": "2.11.0+cu130",
    "cpu_capability": "AVX512",
    "loadavg_1_5_15": [1.0, 1.0, 1.0],
    "cuda": "NVIDIA H200",
}


def test_cost_per_1000_images_is_the_hourly_price_over_images_per_hour():
    costs = gpu_decode.cost_per_1000(10.0)  # 36,000 images an hour
    assert costs == {name: round(INSTANCE_PRICES[name] / 36, 5) for name in gpu_decode.PRICED}
    assert gpu_decode.throughput(32, {"ours_graphs": TIMES})["images_per_s"] == {"ours_graphs": 64.0}


def test_hf_static_column_can_be_left_out(tmp_path):
    args = SimpleNamespace(hf_static_timeout_s=0)
    assert gpu_decode.hf_static(tmp_path, None, {}, [], args, tmp_path)["status"].startswith("not run")


def _section(equal: bool, replays: int = 12) -> dict:
    case = {
        "images": 8,
        "times": {k: TIMES for k in ("hf_eager", "ours_eager", "ours_graphs")},
        "graphs_equal_eager": equal,
        "identical_to_hf_eager": {"ours_graphs": 8, "ours_eager": 8},
        "graphs": {
            "decode": "cuda-graphs" if replays else "eager, capture failed",
            "replays": replays,
            "direct_steps": 0,
            "bucket": "8x1",
            "capture_s": 0.4,
        },
        "device": {
            "encoder_ms": 3.25,
            "decode_ms": 40.0,
            "steps": 12,
            "ms_per_step": 3.3333,
            "kernels": 151,
            "graph_launches": 1,
            "peak_memory_mib": 2048.0,
        },
        **gpu_decode.throughput(8, {k: TIMES for k in ("hf_eager", "ours_eager", "ours_graphs")}),
    }
    static = {
        "status": "timed out after 150 s",
        "cases": {
            "greedy@batch8": {
                "images": 8,
                "identical_to_hf_eager": 7,
                **gpu_decode.throughput(8, {"hf_static_compiled": TIMES}),
            },
            "beam4@batch8": {"images": 8, "error": "ValueError: not supported"},
        },
    }
    return {
        "date": "2026-12-02",
        "mode": "full",
        "runs": 5,
        "machine_before": GPU,
        "prices": {"g5.xlarge": {"usd_per_hour": 1.006, "note": "read 2026-11-30"}},
        "prices_read_on": "2026-11-30",
        "models": {
            "vit-gpt2-base": {
                "eos_every": 4,
                "capture_requested": True,
                "hf_static_compiled": static,
                "cases": {"greedy@batch8": case, "beam4@batch8": case},
            }
        },
    }


@pytest.mark.parametrize("equal", [True, False])
def test_decode_run_is_reported_under_the_gpu_question(equal):
    text = report.render({"bench/gpu-results.json": {"decode_cuda": _section(equal)}})
    assert "### Model level, GPU" in text and "replayed as CUDA graphs" in text
    greedy = next(line for line in text.splitlines() if line.startswith("| greedy@batch8"))
    assert greedy.split(" | ")[1:5] == ["16.0", "16.0", "16.0", "16.0"]
    assert ("| yes |" in greedy) == equal and ("| NO |" in greedy) != equal
    assert "hf_static_compiled 7/8" in greedy
    assert "12 replays, bucket 8x1, encoder 3.2 ms, 3.33 ms/step, 151 kernels/replay, peak 2048 MiB" in greedy
    beam = next(line for line in text.splitlines() if line.startswith("| beam4@batch8"))
    assert beam.split(" | ")[4] == "error"
    assert f"{1.006 / 3600 / 16 * 1000:.4f}" in greedy


def test_a_graphs_column_that_replayed_no_graph_is_reported_as_such_and_fails_the_run():
    section = _section(True, replays=0)
    text = report.render({"bench/gpu-results.json": {"decode_cuda": section}})
    assert "replayed as CUDA graphs" not in text and "NOT replayed in every case" in text
    greedy = next(line for line in text.splitlines() if line.startswith("| greedy@batch8"))
    assert "NO replays (eager, capture failed)" in greedy
    assert gpu_decode.not_replayed(section) == [
        "vit-gpt2-base greedy@batch8 (eager, capture failed)",
        "vit-gpt2-base beam4@batch8 (eager, capture failed)",
    ]
    assert gpu_decode.not_replayed(_section(True)) == []


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gpu-decode")


@pytest.mark.parametrize("capture", ["on", "off"])
def test_the_decode_bench_records_what_the_static_path_ran_and_fails_when_graphs_were_not_replayed(
    bench_dir, tmp_path, capsys, capture
):
    out, cases = tmp_path / "results.json", tmp_path / "cases.jsonl"
    code = gpu_decode.main(
        [
            "--device",
            "cpu",
            "--quick",
            "--batches",
            "1",
            "3",
            "--runs",
            "1",
            "--capture",
            capture,
            "--hf-static-timeout-s",
            "0",
            "--workdir",
            str(bench_dir),
            "--out",
            str(out),
            "--cases-jsonl",
            str(cases),
        ]
    )
    model = json.loads(out.read_text())["decode_cpu"]["models"]["tiny"]
    lines = read_cases(cases)
    assert [(line["model"], line["case"]) for line in lines] == [("tiny", case) for case in model["cases"]]
    assert [line["graphs"] for line in lines] == [case["graphs"] for case in model["cases"].values()]
    assert model["capture_requested"] == (capture == "on")
    if capture == "on":  # the CPU cannot capture: asked for, not replayed, and the run fails
        assert code == 1 and "CUDA graphs were asked for but not replayed" in capsys.readouterr().err
        assert model["prepared"]["beams1"]["decode"] == "eager, capture failed"
        assert "RuntimeError" in model["prepared"]["beams1"]["reason"]
        assert all(case["graphs"]["replays"] == 0 and case["device"] == {} for case in model["cases"].values())
    else:
        assert code == 0
        for case in model["cases"].values():
            ran, device = case["graphs"], case["device"]
            assert ran["decode"] == "static" and ran["replays"] == 0 and ran["direct_steps"] > 0
            assert ran["bucket"].startswith(f"{case['images']}x")  # buckets 1, 2, 3: the largest batch is 3
            assert device["steps"] > 0 and device["encoder_ms"] > 0 and device["aten_ops"] > 0
    summary = gpu_summary.render(lines)
    assert "greedy@batch3" in summary and "tiny" in summary
