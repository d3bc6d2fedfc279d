"""The boot's GPU check: what it reports, and that a machine without a usable GPU fails it (the CPU here)."""

import json
import subprocess
import sys

import pytest
import torch

from runtime import gpu_check


def test_a_cpu_only_torch_is_reported_as_no_usable_gpu_with_the_reason():
    facts = gpu_check.probe()
    assert facts["torch"] == torch.__version__ and facts["torch_cuda"] is None
    assert facts["problem"].startswith("torch is a CPU-only build")


def test_the_check_exits_with_the_no_gpu_code_unless_cpu_is_allowed():
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "runtime", "gpu-check", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    refused, allowed = run(), run("--allow-cpu")
    assert refused.returncode == gpu_check.NO_GPU_EXIT and "no usable GPU" in refused.stderr
    assert allowed.returncode == 0
    assert json.loads(allowed.stdout)["problem"] == json.loads(refused.stdout)["problem"]


@pytest.mark.parametrize(
    "text, version",
    [
        (
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Tue Oct 7 2025\nGCC version: gcc 11\n",
            "580.159.04",
        ),
        ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  595.91.07  Release Build\n", "595.91.07"),
    ],
)
def test_the_driver_version_is_read_from_the_kernel_module(tmp_path, monkeypatch, text, version):
    (tmp_path / "version").write_text(text)
    monkeypatch.setattr(gpu_check, "DRIVER_FILE", tmp_path / "version")
    assert gpu_check.driver_version() == version


def test_a_cuda_build_that_cannot_see_the_gpu_names_the_driver_it_found(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "driver_version", lambda: "570.86.15")
    problem = gpu_check.probe()["problem"]
    assert "built for CUDA 13.0 but CUDA is not available; NVIDIA driver 570.86.15" in problem
