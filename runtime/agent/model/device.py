"""Pick the device; a GPU that CUDA cannot see is a fatal error, never a silent CPU fallback."""
from __future__ import annotations

import os
import shutil
import subprocess

from runtime.errors import DeviceError



def visible_gpus() -> list[str]:
    """GPUs the hardware shows (`nvidia-smi -L` lines, or /dev/nvidia0), whatever torch thinks."""
    if shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        gpus = [line.strip() for line in listing.splitlines() if line.startswith("GPU ")]
        if gpus:
            return gpus
    return ["/dev/nvidia0"] if os.path.exists("/dev/nvidia0") else []


def choose_device(requested: str, gpus: list[str], cuda_available: bool, cuda_build: str | None) -> str:
    """The device to run on, or `DeviceError` saying what is wrong and how to fix it."""
    if requested == "cpu":
        return "cpu"
    if cuda_available:
        return "cuda"
    why = ("torch is a CPU-only build (torch.version.cuda is None); install the CUDA wheel"
           if cuda_build is None else
           f"torch is built for CUDA {cuda_build}; check the driver (nvidia-smi), CUDA_VISIBLE_DEVICES "
           "and that the driver supports this CUDA version")
    if requested == "cuda":
        seen = f"the hardware shows {gpus}" if gpus else "no GPU is visible to the hardware either"
        raise DeviceError(f"device is 'cuda' but CUDA is not available: {seen}; {why}")
    if gpus:
        raise DeviceError(f"this machine has a GPU ({gpus[0]}) but CUDA cannot see it: {why}. "
                          "Refusing to fall back to the CPU; set device to 'cpu' to run there on purpose")
    return "cpu"


def device_without_cpu_fallback(requested: str) -> str:
    """The agent's policy: probe the machine and apply `choose_device`, which refuses to run on the CPU when a
    GPU is present but unusable (runtime.captioner.device_falling_back_to_cpu is the library's, which does not).
    torch is imported only if a GPU could matter."""
    gpus = visible_gpus() if requested != "cpu" else []
    if requested == "cpu" or (requested == "auto" and not gpus):
        return "cpu"
    import torch

    return choose_device(requested, gpus, torch.cuda.is_available(), torch.version.cuda)
