"""GPUs and vCPUs of each instance type the fleet may use: what the settings check and `make status` counts per GPU.

The boot does not read this table: it counts the instance's GPUs itself (`nvidia-smi -L`) and starts one agent
per GPU. Sources (read 2026-12-01): torchx's AWS named resources (meta-pytorch/torchx,
torchx/specs/named_resources_aws.py, "taken from https://aws.amazon.com/ec2/instance-types/") for g4dn, g5, g6e,
p3, p4d and p5; gpuaudit/cli's internal/pricing/gpu_specs.go for g6, which torchx does not list.
"""

from __future__ import annotations

# instance type -> (GPUs, vCPUs)
INSTANCE_GPUS: dict[str, tuple[int, int]] = {
    "g4dn.xlarge": (1, 4),
    "g4dn.2xlarge": (1, 8),
    "g4dn.4xlarge": (1, 16),
    "g4dn.8xlarge": (1, 32),
    "g4dn.16xlarge": (1, 64),
    "g4dn.12xlarge": (4, 48),
    "g4dn.metal": (8, 96),
    "g5.xlarge": (1, 4),
    "g5.2xlarge": (1, 8),
    "g5.4xlarge": (1, 16),
    "g5.8xlarge": (1, 32),
    "g5.16xlarge": (1, 64),
    "g5.12xlarge": (4, 48),
    "g5.24xlarge": (4, 96),
    "g5.48xlarge": (8, 192),
    "g6.xlarge": (1, 4),
    "g6.2xlarge": (1, 8),
    "g6.4xlarge": (1, 16),
    "g6.8xlarge": (1, 32),
    "g6.16xlarge": (1, 64),
    "g6.12xlarge": (4, 48),
    "g6.24xlarge": (4, 96),
    "g6.48xlarge": (8, 192),
    "g6e.xlarge": (1, 4),
    "g6e.2xlarge": (1, 8),
    "g6e.4xlarge": (1, 16),
    "g6e.8xlarge": (1, 32),
    "g6e.16xlarge": (1, 64),
    "g6e.12xlarge": (4, 48),
    "g6e.24xlarge": (4, 96),
    "g6e.48xlarge": (8, 192),
    "p3.2xlarge": (1, 8),
    "p3.8xlarge": (4, 32),
    "p3.16xlarge": (8, 64),
    "p4d.24xlarge": (8, 96),
    "p5.48xlarge": (8, 192),
}


def gpu_count(instance_type: str) -> int | None:
    """How many GPUs `instance_type` has (one agent runs on each), or None when the table does not list it."""
    known = INSTANCE_GPUS.get(instance_type)
    return known[0] if known else None
