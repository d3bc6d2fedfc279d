"""`python -m runtime gpu-check`: prove at boot that torch can run kernels on this machine's GPU, and say which."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

NO_GPU_EXIT = 3  # the boot reads this as "this instance cannot serve": mark it unhealthy, never run on its CPU
DRIVER_FILE = Path("/proc/driver/nvidia/version")


def driver_version() -> str | None:
    """The NVIDIA kernel driver's version (e.g. 580.95.05), from /proc or nvidia-smi; None without a driver."""
    try:
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", DRIVER_FILE.read_text())
        if found:
            return found.group(1)
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                .stdout.strip()
                .splitlines()
            )
            return out[0].strip() if out else None
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def probe() -> dict:
    """Facts about torch, the driver and GPU 0, plus `problem`: None when a CUDA kernel ran and answered right."""
    import torch

    facts = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "driver": driver_version(),
        "gpu": None,
        "capability": None,
        "torch_arches": None,
        "problem": None,
    }
    if torch.version.cuda is None:
        facts["problem"] = "torch is a CPU-only build (torch.version.cuda is None): the CUDA wheel was not installed"
        return facts
    if not torch.cuda.is_available():
        facts["problem"] = (
            f"torch {torch.__version__} is built for CUDA {torch.version.cuda} "
            "but CUDA is not available; "
            f"NVIDIA driver {facts['driver'] or 'not found'}: CUDA {torch.version.cuda} needs a driver "
            "new enough for it (see README, 'The GPU software stack')"
        )
        return facts
    major, minor = torch.cuda.get_device_capability(0)
    facts |= {
        "gpu": torch.cuda.get_device_name(0),
        "capability": f"{major}.{minor}",
        "torch_arches": torch.cuda.get_arch_list(),
        "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
    }
    try:
        x = torch.arange(16, dtype=torch.float32, device="cuda").reshape(4, 4)
        ok = torch.equal((x @ torch.eye(4, device="cuda")).cpu(), x.cpu())
        facts["problem"] = None if ok else "a 4x4 matrix product on the GPU gave a wrong answer"
    except RuntimeError as exc:  # e.g. "no kernel image is available for execution on the device"
        facts["problem"] = (
            f"torch cannot run kernels on {facts['gpu']} (compute capability {major}.{minor}; "
            f"this build has {facts['torch_arches']}): {exc}"
        )
    return facts


def main(argv=None) -> int:
    """Print the probe as one JSON line; exit NO_GPU_EXIT when the GPU is unusable (unless --allow-cpu)."""
    p = argparse.ArgumentParser(prog="python -m runtime gpu-check", description=__doc__)
    p.add_argument("--allow-cpu", action="store_true", help="report only; exit 0 even without a usable GPU")
    args = p.parse_args(argv)
    facts = probe()
    print(json.dumps(facts, sort_keys=True), flush=True)
    if facts["problem"] and not args.allow_cpu:
        print(f"gpu-check: no usable GPU: {facts['problem']}", file=sys.stderr)
        return NO_GPU_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
