"""bench.gpu_decode's arithmetic and report: images/s to dollars per 1,000 images, and its table in the GPU section."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench import gpu_decode, report
from stacks.prices import INSTANCE_PRICES

TIMES = {"median_s": 0.5, "min_s": 0.4, "max_s": 0.6, "iqr_s": 0.1, "runs": 5}
GPU = {"cpu": "Xeon", "cores": 16, "torch": "2.11.0+cu130", "cpu_capability": "AVX512",
       "loadavg_1_5_15": [1.0, 1.0, 1.0], "cuda": "NVIDIA H200"}


def test_cost_per_1000_images_is_the_hourly_price_over_images_per_hour():
    costs = gpu_decode.cost_per_1000(10.0)  # 36,000 images an hour
    assert costs == {name: round(INSTANCE_PRICES[name] / 36, 5) for name in gpu_decode.PRICED}
    assert gpu_decode.throughput(32, {"ours_graphs": TIMES})["images_per_s"] == {"ours_graphs": 64.0}


def test_hf_static_column_can_be_left_out(tmp_path):
    args = SimpleNamespace(hf_static_timeout_s=0)
    assert gpu_decode.hf_static(tmp_path, None, {}, [], args, tmp_path)["status"].startswith("not run")


def _section(equal: bool) -> dict:
    case = {"images": 8, "times": {k: TIMES for k in ("hf_eager", "ours_eager", "ours_graphs")},
            "graphs_equal_eager": equal, "identical_to_hf_eager": {"ours_graphs": 8, "ours_eager": 8},
            **gpu_decode.throughput(8, {k: TIMES for k in ("hf_eager", "ours_eager", "ours_graphs")})}
    static = {"status": "timed out after 150 s", "cases": {"greedy@batch8": {
        "images": 8, "identical_to_hf_eager": 7, **gpu_decode.throughput(8, {"hf_static_compiled": TIMES})},
        "beam4@batch8": {"images": 8, "error": "ValueError: not supported"}}}
    return {"date": "2026-12-02", "mode": "full", "runs": 5, "machine_before": GPU,
            "prices": {"g5.xlarge": {"usd_per_hour": 1.006, "note": "read 2026-11-30"}}, "prices_read_on": "2026-11-30",
            "models": {"vit-gpt2-base": {"eos_every": 4, "captured": True, "hf_static_compiled": static,
                                         "cases": {"greedy@batch8": case, "beam4@batch8": case}}}}


@pytest.mark.parametrize("equal", [True, False])
def test_decode_run_is_reported_under_the_gpu_question(equal):
    text = report.render({"bench/gpu-results.json": {"decode_cuda": _section(equal)}})
    assert "### Model level, GPU" in text and "replayed as CUDA graphs" in text
    greedy = next(line for line in text.splitlines() if line.startswith("| greedy@batch8"))
    assert greedy.split(" | ")[1:5] == ["16.0", "16.0", "16.0", "16.0"]
    assert ("| yes |" in greedy) == equal and ("| NO |" in greedy) != equal
    assert "hf_static_compiled 7/8" in greedy
    beam = next(line for line in text.splitlines() if line.startswith("| beam4@batch8"))
    assert beam.split(" | ")[4] == "error"
    assert f"{1.006 / 3600 / 16 * 1000:.4f}" in greedy
