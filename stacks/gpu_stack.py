"""Which GPUs the workers may run on, and which torch 2.13.0 CUDA build serves each: the facts the settings check.

Sources (checked 2026-11-30):
- torch 2.13 is built for CUDA 12.6 (legacy) and 13.0 (stable), with no 12.8 build: pytorch/pytorch PR #187075
  (the 2.13 release matrix) and pytorch/FBGEMM PR #5976 ("torch-2.13 has cu126=108 and cu130=108 wheels but
  cu128=0"); CUDA 13 is PyPI's default for Linux x86_64 (pytorch announcement in googlecolab/colabtools #6053).
- GPU architectures per build (pytorch/pytorch RELEASE.md, PR #182849, kept for 2.13 by PR #197555): cu126
  Maxwell 5.0 to Hopper 9.0; cu130 Turing 7.5, Ampere 8.0/8.6, Hopper 9.0, Blackwell 10.0/12.0. Ada (8.9: L4,
  L40S) runs the 8.6 code, as CUDA binaries run on any GPU of the same major and a higher minor version.
- Driver: CUDA 13.x needs >= 580, CUDA 12.x >= 525 (NVIDIA, CUDA minor version compatibility). The default
  AMI, Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023), release 20260901: driver 595.91.07,
  /usr/bin/python3.12, for G4dn, G5, G6, G6e, P4d, P5... (AWS DLAMI release notes); its root snapshot is 75 GB.
"""

from __future__ import annotations

PYPI = "https://pypi.org/simple"
# index -> (CUDA line, lowest NVIDIA driver, lowest and highest compute capability in the build)
TORCH_INDEXES = {
    PYPI: ("13.0", "580", 7.5, 12.0),
    "https://download.pytorch.org/whl/cu130": ("13.0", "580", 7.5, 12.0),
    "https://download.pytorch.org/whl/cu126": ("12.6", "525", 5.0, 9.0),
}
# instance family -> (GPU, compute capability)
GPU_FAMILIES = {
    "g4dn": ("NVIDIA T4", 7.5),
    "g5": ("NVIDIA A10G", 8.6),
    "g6": ("NVIDIA L4", 8.9),
    "g6e": ("NVIDIA L40S", 8.9),
    "p3": ("NVIDIA V100", 7.0),
    "p4d": ("NVIDIA A100", 8.0),
    "p5": ("NVIDIA H100", 9.0),
}
AMI_SNAPSHOT_GB = 75  # the DLAMI's root snapshot: a smaller root volume fails at launch (InvalidBlockDeviceMapping)


def index_problem(index: str) -> str | None:
    """Why `index` cannot serve torch 2.13.0 to the workers, or None when it can."""
    if index.rstrip("/") in TORCH_INDEXES:
        return None
    tag = index.rstrip("/").rsplit("/", 1)[-1]
    if "download.pytorch.org/whl/" in index:
        return (
            f"torch_index_url={index!r}: torch 2.13.0 has no {tag} build (only CUDA 12.6 and 13.0: pytorch/pytorch "
            f"PR #187075; no cu128: pytorch/FBGEMM PR #5976); use {PYPI} (CUDA 13.0, hash-locked) or "
            "https://download.pytorch.org/whl/cu126 (for NVIDIA drivers older than 580)"
        )
    return f"torch_index_url={index!r}: expected one of {sorted(TORCH_INDEXES)}"


def instance_problem(instance_type: str, index: str) -> str | None:
    """Why the torch build from `index` cannot run on `instance_type`'s GPU, or None when it can."""
    family = instance_type.split(".", 1)[0]
    if family not in GPU_FAMILIES:
        return (
            f"instance type {instance_type!r}: not a GPU family CaptionKit knows ({', '.join(GPU_FAMILIES)}); "
            "add it to stacks/gpu_stack.py once its GPU is checked against torch's CUDA architectures"
        )
    gpu, capability = GPU_FAMILIES[family]
    cuda, _driver, lowest, highest = TORCH_INDEXES.get(index.rstrip("/"), TORCH_INDEXES[PYPI])
    if not lowest <= capability <= highest:
        return (
            f"instance type {instance_type!r}: its {gpu} (compute capability {capability}) is not in torch 2.13's "
            f"CUDA {cuda} build (compute capability {lowest} to {highest}); "
            + (
                "use torch_index_url=https://download.pytorch.org/whl/cu126"
                if capability < 7.5
                else "pick another type"
            )
        )
    return None
