"""bench/gpu.sh rehearsed whole on the CPU (DEVICE=cpu, tiny models): every stage's arguments, results and report.

A lent GPU comes with 15 minutes in all; this is how the script is known to run through before they are spent.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import report, report_decode

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("== 1. rehearsal on cpu", "== 2. tiny model", "== 2b.", "== 2c.", "== 3. decode", "== 4.", "== 5. Qwen2-VL")


def test_the_gpu_script_runs_every_stage_on_the_cpu_and_its_results_render(tmp_path):
    results = tmp_path / "gpu-results.json"
    env = {**os.environ, "DEVICE": "cpu", "GPU_PYTHON": sys.executable, "DECODE_MODELS": "tiny",
           "BENCH_MODELS": "tiny", "QWEN_LAYERS": "1 1", "BENCH_RUNS": "1", "RESULTS": str(results),
           "OUT": str(tmp_path / "logs"), "GPU_WORKDIR": str(tmp_path / "work")}
    done = subprocess.run(["bash", "bench/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = done.stderr
    assert done.returncode == 0, log[-3000:]
    assert [stage for stage in STAGES if stage not in log] == [], log[-3000:]
    assert "decode exit 0, bfloat16 exit 0, qwen exit 0" in log, log[-2000:]

    sections = json.loads(results.read_text())
    assert set(sections) == {"model_cuda_tiny", "description_cuda", "decode_cuda_tiny", "decode_cuda", "model_cuda",
                             "qwen_vl_cuda"}
    assert sections["description_cuda"]["tokens_equal"] is True
    for key in ("decode_cuda_tiny", "decode_cuda"):
        cases = sections[key]["models"]["tiny"]["cases"]
        assert cases and all(case["graphs_equal_eager"] for case in cases.values()), key
    decode = sections["decode_cuda"]["models"]["tiny"]
    assert {"greedy@batch64", "beam3@batch64"} <= set(decode["cases"])
    assert decode["hf_static_compiled"]["status"] == "ok"
    assert sections["qwen_vl_cuda"]["same_tokens@1"] and sections["qwen_vl_cuda"]["same_tokens@8"]

    doc = tmp_path / "BENCHMARKS.md"
    assert report.main(["--results", str(results), "--doc", str(doc)]) == 0
    assert "model_cuda_tiny" in doc.read_text() and "qwen_vl_cuda" in doc.read_text()
    table = "\n".join(report_decode.decode_tables("decode_cuda", sections["decode_cuda"]))  # on a GPU: in the doc
    assert "greedy@batch64" in table and "tiny" in table
