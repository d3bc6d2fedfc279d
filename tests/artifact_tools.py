"""Test helpers that damage or rewrite .pt2 archives the way real failures would."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from runtime.artifact.pt2 import PT2ArchiveReader, PT2ArchiveWriter
from runtime.artifact.verify import verify
from runtime.errors import ArtifactError

ROOT = Path(__file__).resolve().parents[1]


def caption_cli(artifact: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`python -m runtime caption` of one small PNG with `artifact`, as a user runs it (its own cache folder)."""
    from PIL import Image

    image = tmp_path / "a.png"
    Image.new("RGB", (20, 20)).save(image)
    command = ["-m", "runtime", "caption", "--artifact", str(artifact), "--cache", str(tmp_path / "cache"), str(image)]
    return subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


def refused(path: Path, match: str) -> None:
    """`path` refused with an error matching `match`, by a load and by what `make upload` runs first."""
    from runtime.captioner import load_captioner

    with pytest.raises(ArtifactError, match=match):
        load_captioner(path, "cpu")
    with pytest.raises(ArtifactError, match=match):
        verify(path)  # what `make upload` runs before it publishes anything


def rewrite_manifest(src: Path, dst: Path, **changes) -> Path:
    """Copy an archive record by record, with some manifest fields changed."""
    reader = PT2ArchiveReader(str(src))
    with PT2ArchiveWriter(str(dst)) as writer:
        for name in reader.get_file_names():
            if name.startswith(".data/") or name in ("byteorder",):
                continue
            data = reader.read_bytes(name)
            if name == "extra/manifest.json":
                manifest = json.loads(data)
                manifest.update(changes)
                data = json.dumps(manifest).encode()
            writer.write_bytes(name, data)
    return dst


def flip_byte_in_record(src: Path, dst: Path, record_suffix: str) -> Path:
    """Copy the file and flip one byte inside the data of the first record whose name ends with the suffix."""
    shutil.copyfile(src, dst)
    with zipfile.ZipFile(dst) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(record_suffix))
    with open(dst, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        offset = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    return dst


def truncate(src: Path, dst: Path, keep: float = 0.6) -> Path:
    """Copy only the first part of the file, as an interrupted download would."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return dst


def forge(src: Path, dst: Path, graphs=None, records: dict[str, bytes] | None = None) -> Path:
    """An attacker's edit of an artifact: `graphs(description)` edits extra/graphs.json in place, `records` replaces
    whole records; the manifest's own checksums (graphs, programs) are recomputed to match, as an attacker would."""
    import hashlib

    from runtime.artifact.checksum import program_checksum

    reader = PT2ArchiveReader(str(src))
    contents = {
        name: reader.read_bytes(name)
        for name in reader.get_file_names()
        if not name.startswith(".data/") and name != "byteorder"
    }
    if graphs is not None:
        description = json.loads(contents["extra/graphs.json"])
        graphs(description)
        contents["extra/graphs.json"] = json.dumps(description).encode()
    contents.update(records or {})
    manifest = json.loads(contents["extra/manifest.json"])
    manifest["graphs_sha256"] = hashlib.sha256(contents["extra/graphs.json"]).hexdigest()
    for entry in manifest["programs"].values():
        entry["sha256"] = program_checksum({r: hashlib.sha256(contents[r]).hexdigest() for r in entry["records"]})
    contents["extra/manifest.json"] = json.dumps(manifest).encode()
    with PT2ArchiveWriter(str(dst)) as writer:
        for name, data in contents.items():
            writer.write_bytes(name, data)
    return dst
