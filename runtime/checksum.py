"""The per-program checksum shared by the exporter (which writes it) and the runtime (which checks it)."""
from __future__ import annotations

import hashlib


def program_checksum(records: dict[str, str]) -> str:
    """One checksum over a program's archive records: each record's name and SHA-256, in name order."""
    digest = hashlib.sha256()
    for name in sorted(records):
        digest.update(f"{name}\0{records[name]}\n".encode())
    return digest.hexdigest()
