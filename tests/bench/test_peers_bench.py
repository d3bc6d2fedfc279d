"""The peers benchmark: contenders in rotation on one pixel batch, tokens against HF eager's, failures quoted once.

No ONNX Runtime or OpenVINO here: the peers are stand-ins, and the renderer reads a recorded section.
"""

from __future__ import annotations

from bench import peers
from bench.report import render


def _section(cases: dict, errors: dict | None = None) -> dict:
    machine = {
        "cpu": "Test CPU",
        "cores": 2,
        "torch": "2.13.0+cpu",
        "cpu_capability": "AVX512",
        "loadavg_1_5_15": [4.1, 4.5, 4.0],
    }
    return {
        "title": "ViT-GPT2 base against its CPU peers",
        "date": "2026-12-07",
        "model": "vit-gpt2-base",
        "runs": 3,
        "versions": {"torch": "2.13.0+cpu", "onnxruntime": "1.32.0", "openvino": None},
        "labels": peers.LABELS,
        "machine_before": machine,
        "machine_after": {**machine, "loadavg_1_5_15": [5.0, 4.6, 4.1]},
        "cases": cases,
        "errors": errors or {},
        "hf_compiled": {"hf_static": True},
    }


def _times(median: float) -> dict:
    return {"median_s": median, "min_s": median * 0.9, "max_s": median * 1.2, "iqr_s": 0.1, "runs": 3}


def test_rows_carry_the_median_the_ratio_to_hf_eager_and_the_captions_equal_and_each_error_once():
    openvino = "RuntimeError: Failed to broadcast-merge input shapes (at modeling_seq2seq.py:971 in forward)"
    cases = {
        f"greedy@batch{b}": {
            "images": b,
            "times": {"hf_eager": _times(2.0 * b), "ort": _times(4.0 * b)},
            "identical_to_hf": {"hf_eager": b, "ort": b - 1},
            "tokens": {"hf_eager": [[1, 2, 3]] * b, "ort": [[1, 2]] * b},
            "speedup_vs_hf": {"hf_eager": 1.0, "ort": 0.5},
            "errors": {"openvino": openvino},
        }
        for b in (1, 8)
    }
    appendix = render({"results.json": {"peers_cpu_vit_gpt2_base": _section(cases, {"ort_int8": "OSError: x"})}})
    assert "### CPU against its peers" in appendix
    assert "| greedy@batch8 | ONNX Runtime float32 | 32.000 (28.800-38.400) | 0.50x | 7/8 | 2.0 |" in appendix
    assert "| greedy@batch1 | HF generate (eager) | 2.000 (1.800-2.400) | 1.00x | 1/1 | 3.0 |" in appendix
    prose = " ".join(appendix.split())  # the house width folds the prose lines
    assert "load average [4.1, 4.5, 4.0] before, [5.0, 4.6, 4.1] after" in prose
    assert "onnxruntime 1.32.0" in prose and "(openvino not installed)" in prose
    assert prose.count("Failed to broadcast-merge") == 1  # quoted once, with every case it failed in
    assert "OpenVINO float32 failed (greedy@batch1, greedy@batch8)" in prose
    assert "ONNX Runtime dynamic int8 failed (load or first call): `OSError: x`" in prose
    assert "HF generate, static cache + torch.compile: transformers compiled the forward" in prose


def test_a_peer_failing_at_one_batch_is_recorded_and_left_out_of_that_case_only(monkeypatch, tiny_artifact):
    def build(name, folder, artifact, workdir, spinning):
        if name == "hf_eager":  # a stand-in for HF: the runtime's own tokens
            return real(name="ours", folder=folder, artifact=artifact, workdir=workdir, spinning=spinning)
        if name == "openvino":

            def fails_above_one_row(px, kwargs):
                if len(px) > 1:
                    raise RuntimeError("Failed to broadcast-merge input shapes")
                return [[1, 2]]

            return fails_above_one_row
        raise ImportError(f"no {name} here")

    real = peers.build
    monkeypatch.setattr(peers, "build", build)
    result = peers.run(
        tiny_artifact.parent,
        tiny_artifact,
        tiny_artifact.parent,
        ["hf_eager", "ort", "openvino"],
        batches=[1, 2],
        runs=1,
        spinning=False,
    )
    assert list(result["errors"]) == ["ort"]
    assert result["errors"]["ort"].startswith("ImportError: no ort here (at test_peers_bench.py:")
    one, two = result["cases"]["greedy@batch1"], result["cases"]["greedy@batch2"]
    assert set(one["times"]) == {"hf_eager", "openvino"} and one["errors"] == {}
    assert set(two["times"]) == {"hf_eager"} and "broadcast-merge" in two["errors"]["openvino"]
    assert two["identical_to_hf"] == {"hf_eager": 2} and two["speedup_vs_hf"] == {"hf_eager": 1.0}


def test_rows_end_at_their_first_eos():
    assert peers.until_eos([[5, 7, 9, 9], [5, 6]], eos=9) == [[5, 7, 9], [5, 6]]
