"""Load policy: which device, backend, dtype and quantization a model runs with, and the refusals between them.

Every rule a load applies before it reads a weight has its home here; the caption CLI, the agent's settings and
`load_captioner` ask this module instead of deciding for themselves:
- the device: the library's `auto` falls back to the CPU (`device_falling_back_to_cpu`), the agent's refuses to on a
  machine whose GPU CUDA cannot see (`device_without_cpu_fallback`); CUDA is named with its index (`explicit_index`);
- the backend: `exported` (runtime.backends.exported) on any device, `aoti` (runtime.backends.aoti) on the CPU only,
  never together with `quantize` (`check_options`, `refuse_aoti_on_cuda`);
- quantization: fbgemm int8 or fp16 linears, on the CPU, for a float32 artifact (`check_quantize`);
- the graph passes applied to the exported decoder step on each device (`step_passes`).
torch is imported only where a rule needs it, so the agent's settings and the command lines stay light to import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

from runtime.errors import ArtifactError, DeviceError

if TYPE_CHECKING:
    import torch

    from runtime.options import LoadOptions

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("exported", "aoti")
QUANTIZE_MODES = ("int8", "fp16")

AOTI_ON_CUDA = (
    "backend='aoti' runs on the CPU only: AOTInductor is not validated on CUDA; on a GPU use "
    "backend='exported', whose decode replays CUDA graphs"
)


# ---- the device ------------------------------------------------------------------------------------------------


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
    """The agent's device, or `DeviceError` saying what is wrong and how to fix it."""
    if requested == "cpu":
        return "cpu"
    if cuda_available:
        return "cuda"
    why = (
        "torch is a CPU-only build (torch.version.cuda is None); install the CUDA wheel"
        if cuda_build is None
        else f"torch is built for CUDA {cuda_build}; check the driver (nvidia-smi), CUDA_VISIBLE_DEVICES "
        "and that the driver supports this CUDA version"
    )
    if requested == "cuda":
        seen = f"the hardware shows {gpus}" if gpus else "no GPU is visible to the hardware either"
        raise DeviceError(f"device is 'cuda' but CUDA is not available: {seen}; {why}")
    if gpus:
        raise DeviceError(
            f"this machine has a GPU ({gpus[0]}) but CUDA cannot see it: {why}. "
            "Refusing to fall back to the CPU; set device to 'cpu' to run there on purpose"
        )
    return "cpu"


def device_without_cpu_fallback(requested: str) -> str:
    """The agent's policy: probe the machine and apply `choose_device`, which refuses to run on the CPU when a
    GPU is present but unusable (`device_falling_back_to_cpu` is the library's, which does not).
    torch is imported only if a GPU could matter."""
    gpus = visible_gpus() if requested != "cpu" else []
    if requested == "cpu" or (requested == "auto" and not gpus):
        return "cpu"
    import torch

    return choose_device(requested, gpus, torch.cuda.is_available(), torch.version.cuda)


def device_falling_back_to_cpu(device: str | torch.device = "auto") -> torch.device:
    """The library's policy: 'auto' means CUDA when torch can see a GPU, else the CPU (the agent refuses that
    fallback on a GPU machine: `device_without_cpu_fallback`)."""
    import torch

    if str(device) == "auto":
        return explicit_index(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ArtifactError(
            "device 'cuda' was asked for, but torch cannot see a CUDA GPU (torch.cuda.is_available() is False)"
        )
    return explicit_index(resolved)


def explicit_index(device: torch.device) -> torch.device:
    """`cuda` as `cuda:<current>`: AOTInductor's compiled input check compares device strings, so a program moved
    to plain `cuda` refuses the `cuda:0` tensors it is given."""
    import torch

    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


# ---- the backend, quantization and the passes ------------------------------------------------------------------


def check_options(options: LoadOptions) -> None:
    """ValueError for options that refuse each other whatever the device: an unknown backend, or `quantize` with
    a backend other than the exported programs."""
    if options.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {options.backend!r}")
    if options.quantize is not None and options.backend != "exported":
        raise ValueError(
            f"quantize={options.quantize} applies to the exported programs; AOTInductor compiles the "
            "float ones (use backend='exported' with quantize, or aoti without)"
        )


def quantize_fits(backend: str, device: str) -> bool:
    """Whether `quantize` may go with this backend and requested device, as a setting is checked before any load:
    the exported programs, on a device that is not CUDA (`check_quantize` refuses the rest once the device is
    known)."""
    return backend == "exported" and device != "cuda"


def refuse_aoti_on_cuda(backend: str, device: torch.device) -> None:
    """ValueError for `backend='aoti'` on a CUDA device (see AOTI_ON_CUDA)."""
    import torch

    if backend == "aoti" and torch.device(device).type == "cuda":
        raise ValueError(AOTI_ON_CUDA)


def check_quantize(mode: str, device: torch.device, dtype: str) -> None:
    """Refuse, with the reason, a quantization this device or artifact cannot run (before anything is loaded)."""
    import torch

    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, not {mode!r}")
    if device.type != "cpu":
        raise ArtifactError(
            f"quantize={mode} runs fbgemm CPU kernels; on {device.type} use an artifact exported "
            "with --dtype float16 or bfloat16 instead"
        )
    if dtype != "float32":
        raise ArtifactError(
            f"quantize={mode} needs a float32 artifact (this one is {dtype}); export with --dtype float32"
        )
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise ArtifactError(f"quantize={mode}: this torch build has no fbgemm engine (x86 CPUs only)")


def step_passes(options: LoadOptions, device: torch.device) -> tuple[str, ...]:
    """The load-time passes on the exported decoder step, in order: the decode layout on the CPU only (it suits MKL's
    small-row matmuls), the in-place cache on every device (a step writes one position, not the whole cache), one
    float attention mask per step on every device (not one per attention call), and GPT-2's tanh GELU as one op
    (eight elementwise kernels a layer before; the pass itself keeps it composed outside float32)."""
    passes = []
    if options.decode_layout and device.type == "cpu":
        passes.append("decode_layout")
    if options.cache_in_place:
        passes.append("cache_in_place")
    if options.one_mask:
        passes.append("one_mask")
    if options.one_gelu:
        passes.append("one_gelu")
    return tuple(passes)
