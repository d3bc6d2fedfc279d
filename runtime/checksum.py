"""Checksums shared by the exporter, the runtime, the agent and the upload tool (no torch import)."""
from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a whole file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def program_checksum(records: dict[str, str]) -> str:
    """One checksum over a program's archive records: each record's name and SHA-256, in name order."""
    digest = hashlib.sha256()
    for name in sorted(records):
        digest.update(f"{name}\0{records[name]}\n".encode())
    return digest.hexdigest()
