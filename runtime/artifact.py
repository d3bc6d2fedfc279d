"""Open a CaptionKit .pt2: verify schema, torch version and checksums, then load the programs onto a device."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from runtime.checksum import program_checksum
from runtime.errors import ArtifactError

SCHEMA_VERSION = 1
PROGRAMS = ("encoder", "decoder_step")
REQUIRED = ("source", "family", "dtype", "preprocessing", "generation", "tokenizer", "max_batch", "max_beams")


def _reader(path: Path):
    from torch.export.pt2_archive._package import PT2ArchiveReader

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
    path = Path(path)
    reader = _reader(path)
    try:
        manifest = json.loads(reader.read_string("extra/manifest.json"))
        tokenizer_json = reader.read_string("extra/tokenizer.json")
    except Exception as exc:
        raise ArtifactError(f"{path}: has no readable manifest.json/tokenizer.json ({exc}); not a CaptionKit artifact") from None
    schema = manifest.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: manifest schema version {schema!r} is not supported by this runtime (it reads {SCHEMA_VERSION}); "
            "export the model again with the matching CaptionKit version"
        )
    missing = [key for key in REQUIRED if manifest.get(key) is None]
    if missing:
        raise ArtifactError(f"{path}: manifest.json lacks {', '.join(missing)}: it was written by another "
                            "CaptionKit version; export the model again")
    exported_with = str(manifest.get("torch_version", "?"))
    here = torch.__version__.split("+")[0]
    if exported_with.split("+")[0] != here:
        raise ArtifactError(
            f"{path}: exported with torch {exported_with}, but this runtime has torch {torch.__version__}; "
            f"install torch=={exported_with.split('+')[0]} (CPU or CUDA build) or re-export with torch {here}"
        )
    if hashlib.sha256(tokenizer_json.encode()).hexdigest() != manifest.get("tokenizer_sha256"):
        raise ArtifactError(f"{path}: tokenizer.json checksum mismatch: the file was modified after export")
    for name in PROGRAMS:
        entry = manifest.get("programs", {}).get(name)
        if entry is None:
            raise ArtifactError(f"{path}: manifest lists no '{name}' program")
        if not check_programs:
            continue
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
    from torch.export.pt2_archive._package import load_pt2

    contents = load_pt2(str(path))
    modules = {}
    for name in PROGRAMS:
        program = contents.exported_programs[name]
        if device.type != "cpu":
            program = move_to_device_pass(program, device)
        modules[name] = program.module()
    return modules
