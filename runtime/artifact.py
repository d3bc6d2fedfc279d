"""Open a CaptionKit .pt2: verify schema, torch version and checksums, then load the programs onto a device."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from runtime import manifest as manifests
from runtime.checksum import program_checksum
from runtime.errors import ArtifactError
from runtime.manifest import PROGRAMS


def _reader(path: Path):
    from runtime.pt2 import PT2ArchiveReader  # torch's archive code is imported when first needed

    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file")
    try:
        return PT2ArchiveReader(str(path))
    except Exception as exc:  # torch raises RuntimeError/AssertionError for a damaged zip
        raise ArtifactError(
            f"{path}: not a complete PT2 archive (truncated download or not a .pt2 file?): {exc}; "
            "download or export it again"
        ) from None


def _record_sha(reader, name: str) -> str:
    try:
        return hashlib.sha256(reader.read_bytes(name)).hexdigest()
    except Exception:
        return "missing"


def verify(path: str | os.PathLike, check_programs: bool = True) -> tuple[dict, str]:
    """Check the manifest schema, the torch version and every program checksum; return (manifest, tokenizer).

    `check_programs=False` skips hashing the program records: for a file whose whole SHA-256 was just
    matched against a pointer written by `make upload`, which verified the records before uploading.
    """
    from runtime.pt2 import EXTRA_DIR

    path = Path(path)
    reader = _reader(path)
    try:
        manifest = json.loads(reader.read_string(EXTRA_DIR + manifests.MANIFEST_FILE))
        tokenizer_json = reader.read_string(EXTRA_DIR + manifests.TOKENIZER_FILE)
    except Exception as exc:
        raise ArtifactError(f"{path}: has no readable manifest.json/tokenizer.json ({exc}); not a CaptionKit artifact") from None
    manifests.check(manifest, tokenizer_json, path)
    for name in PROGRAMS if check_programs else ():
        entry = manifest["programs"][name]
        actual = program_checksum({rec: _record_sha(reader, rec) for rec in entry["records"]})
        if actual != entry["sha256"]:
            raise ArtifactError(
                f"{path}: checksum mismatch in program '{name}' (expected {entry['sha256'][:12]}…, "
                f"got {actual[:12]}…): the file is damaged or was tampered with; download or export it again"
            )
    return manifest, tokenizer_json


def explicit_index(device: torch.device) -> torch.device:
    """`cuda` as `cuda:<current>`: AOTInductor's compiled input check compares device strings, and a program moved
    to plain `cuda` refused the `cuda:0` tensors it was given (seen on an H200, torch 2.11)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def load_programs(path: str | os.PathLike, device: torch.device) -> dict[str, torch.nn.Module]:
    """Load the exported programs and move them to `device` (move_to_device_pass, no CPU kernels baked in)."""
    from torch.export.passes import move_to_device_pass

    from runtime.pt2 import load_pt2

    contents = load_pt2(str(path))
    modules = {}
    for name in PROGRAMS:
        program = contents.exported_programs[name]
        if device.type != "cpu":
            program = move_to_device_pass(program, device)
        modules[name] = program.module()
    return modules
