"""The exported backend: an artifact's programs rebuilt on a device from its checked description, as torch.fx
modules (runtime.artifact.graphs), with nothing CPU-specific baked in; the graph passes (runtime.passes) and the
decode loops (runtime.decode) run on them. Its sibling, runtime.backends.aoti, compiles these same programs."""

from __future__ import annotations

import os

import torch

from runtime.artifact import graphs
from runtime.artifact.verify import Checked, check_artifact
from runtime.errors import ArtifactError


def load_programs(artifact: str | os.PathLike | Checked, device: torch.device) -> dict[str, torch.nn.Module]:
    """The programs on `device`, rebuilt from the checked description (`artifact` is checked first when it is a
    path); the graph is moved as `move_to_device_pass` would, so nothing CPU-specific is baked in."""
    checked = artifact if isinstance(artifact, Checked) else check_artifact(artifact, device=device)
    return rebuilt_programs(checked, device)[0]


def rebuilt_programs(checked: Checked, device: torch.device) -> tuple[dict[str, torch.nn.Module], float]:
    """`load_programs` of a checked artifact, and the seconds spent reading its weights."""
    try:
        return graphs.rebuild(checked.programs, checked.path, device)
    except (graphs.BadDescription, OSError, RuntimeError, TypeError, ValueError) as exc:
        raise ArtifactError(
            f"{checked.path}: programs not rebuilt ({type(exc).__name__}: {str(exc)[:300]}); "
            "download or export it again"
        ) from None
