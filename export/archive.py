"""Write the one-file .pt2 archive: both programs, tokenizer.json and manifest.json with per-program checksums."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from torch.export import ExportedProgram

from runtime.checksum import program_checksum
from torch.export.pt2_archive._package import PT2ArchiveWriter, _package_exported_programs, _package_extra_files


class _HashingWriter:
    """Passes records to the archive writer and remembers each one's SHA-256, for the manifest."""

    def __init__(self, writer: PT2ArchiveWriter):
        self._writer = writer
        self.records: dict[str, str] = {}

    def write_bytes(self, name: str, data: bytes) -> None:
        self.records[name] = hashlib.sha256(data).hexdigest()
        self._writer.write_bytes(name, data)

    def write_string(self, name: str, data: str) -> None:
        self.write_bytes(name, data.encode())

    def __getattr__(self, name):
        return getattr(self._writer, name)


def write_archive(path: str | os.PathLike, programs: dict[str, ExportedProgram], tokenizer_json: str,
                  manifest: dict) -> dict:
    """Write the archive atomically (temp file then rename); returns the manifest as written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The archive's inner folder is named after the file, so write under the final name in a temp folder.
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=path.parent)) / path.name
    manifest = dict(manifest, programs={})
    with PT2ArchiveWriter(str(tmp)) as writer:
        for name, program in programs.items():
            hashing = _HashingWriter(writer)
            _package_exported_programs(hashing, {name: program})
            manifest["programs"][name] = {"records": sorted(hashing.records), "sha256": program_checksum(hashing.records)}
        manifest["tokenizer_sha256"] = hashlib.sha256(tokenizer_json.encode()).hexdigest()
        _package_extra_files(writer, {"tokenizer.json": tokenizer_json,
                                      "manifest.json": json.dumps(manifest, indent=2, sort_keys=True)})
    os.replace(tmp, path)
    tmp.parent.rmdir()
    return manifest
