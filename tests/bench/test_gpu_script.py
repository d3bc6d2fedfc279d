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
from bench.cases import read_cases

ROOT = Path(__file__).resolve().parents[2]
# in this order: the tiny gate, then the cases that answer the targets, then the checks with the time left
STAGES = (
    "== 1. rehearsal on cpu",
    "== 2. static decode on the tiny model",
    "== 3. decode",
    "== 4.",
    "== 5. Qwen2-VL",
    "== 6. tiny model",
    "== 6b.",
)


def test_the_gpu_script_runs_every_stage_on_the_cpu_and_its_results_render(tmp_path):
    results = tmp_path / "gpu-results.json"
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "GPU_PYTHON": sys.executable,
        "DECODE_MODELS": "tiny",
        "BENCH_MODELS": "tiny",
        "QWEN_LAYERS": "1 1",
        "QWEN_REPEATS": "1",
        "BENCH_RUNS": "1",
        "RESULTS": str(results),
        "OUT": str(tmp_path / "logs"),
        "GPU_WORKDIR": str(tmp_path / "work"),
        "LIMIT_S": "840",
    }
    done = subprocess.run(["bash", "bench/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = done.stderr
    assert done.returncode == 0, log[-3000:]
    assert [stage for stage in STAGES if stage not in log] == [], log[-3000:]
    assert [log.index(stage) for stage in STAGES] == sorted(log.index(stage) for stage in STAGES)
    assert "budget: 780 s (limit 840 s less 60 s of slack)" in log
    assert "decode exit 0, bfloat16 exit 0, qwen exit 0, tiny exit 0, description exit 0; done in" in log, log[-2000:]

    cases = read_cases(tmp_path / "logs" / "cases.jsonl")  # one line per case, as each finished
    decode = [(c["section"], c["case"]) for c in cases if "graphs" in c]
    assert decode[:4] == [("decode_cuda_tiny", f"greedy@batch{n}") for n in (1, 3, 5, 8)]
    assert [case for section, case in decode if section == "decode_cuda"] == [
        "greedy@batch1",
        "greedy@batch64",
        "beam3@batch1",
        "beam3@batch64",
    ]
    static = [c["case"] for c in cases if c.get("contender") == "hf_static_compiled"]
    assert static == ["greedy@batch1", "greedy@batch64", "beam3@batch1", "beam3@batch64"]
    assert [c["dtype"] for c in cases if c.get("stage") == "model"][:4] == ["bfloat16"] * 4
    assert [c["batch"] for c in cases if c.get("stage") == "qwen"] == [1, 8]
    summary = (tmp_path / "logs" / "summary.txt").read_text()
    assert "greedy@batch64" in summary and "Qwen2-VL widths bfloat16 batch 8" in summary

    sections = json.loads(results.read_text())
    assert set(sections) == {
        "model_cuda_tiny",
        "description_cuda",
        "decode_cuda_tiny",
        "decode_cuda",
        "model_cuda",
        "qwen_vl_cuda",
    }
    assert sections["description_cuda"]["tokens_equal"] is True
    for key in ("decode_cuda_tiny", "decode_cuda"):
        cases = sections[key]["models"]["tiny"]["cases"]
        assert cases and all(case["graphs_equal_eager"] for case in cases.values()), key
    decode = sections["decode_cuda"]["models"]["tiny"]
    assert {"greedy@batch64", "beam3@batch64"} <= set(decode["cases"])
    assert decode["hf_static_compiled"]["status"] == "greedy: ok; beam3: ok"
    assert sections["qwen_vl_cuda"]["same_tokens@1"] and sections["qwen_vl_cuda"]["same_tokens@8"]

    doc = tmp_path / "BENCHMARKS.md"
    assert report.main(["--results", str(results), "--doc", str(doc)]) == 0
    assert "model_cuda_tiny" in doc.read_text() and "qwen_vl_cuda" in doc.read_text()
    table = "\n".join(report_decode.decode_tables("decode_cuda", sections["decode_cuda"]))  # on a GPU: in the doc
    assert "greedy@batch64" in table and "tiny" in table
