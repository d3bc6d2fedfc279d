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


def scan_sha256(
    path: str | os.PathLike, regions: dict[str, tuple[int, int]], chunk: int = 4 << 20
) -> tuple[str, dict[str, str]]:
    """One read of a file: its whole SHA-256 and that of each named (offset, size) byte range, ranges disjoint.

    A region past the end of the file (a truncated archive) hashes only the bytes that are there, so it
    cannot match the checksum of the complete record.
    """
    whole = hashlib.sha256()
    parts = {name: hashlib.sha256() for name in regions}
    spans = sorted((offset, offset + size, name) for name, (offset, size) in regions.items())
    first = 0  # spans before this index ended before the current block
    position = 0
    with open(path, "rb", buffering=0) as f:
        while block := f.read(chunk):
            whole.update(block)
            view, end = memoryview(block), position + len(block)
            i = first
            while i < len(spans) and spans[i][0] < end:
                start, stop, name = spans[i]
                if stop > position:
                    parts[name].update(view[max(start, position) - position : min(stop, end) - position])
                i += 1
            while first < len(spans) and spans[first][1] <= end:
                first += 1
            position = end
    return whole.hexdigest(), {name: digest.hexdigest() for name, digest in parts.items()}


def program_checksum(records: dict[str, str]) -> str:
    """One checksum over a program's archive records: each record's name and SHA-256, in name order."""
    digest = hashlib.sha256()
    for name in sorted(records):
        digest.update(f"{name}\0{records[name]}\n".encode())
    return digest.hexdigest()
