"""Verified stamps: a file hashed and checked once is not hashed again until it changes on disk.

A stamp lives in the local cache (never beside the user's file), named by the file's real path, and holds
the SHA-256 found plus the file's identity as the kernel reports it: device, inode, size, modification
and change times. Any write, truncation, `touch`, copy or replacement changes at least the size, the
inode or the change time (ctime cannot be set from user space), so the stamp stops matching and the file
is hashed and checked again in full.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from runtime.cache_write import write_whole

STAMP_DIR = "verified"


def identity(path: str | os.PathLike) -> list[int]:
    """The file's identity for a stamp; take it before hashing and pass it to `write_stamp`."""
    st = Path(path).stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _stamp_path(cache_dir: str | os.PathLike, path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return Path(cache_dir).expanduser() / STAMP_DIR / f"{key}.json"


def stamped_sha256(cache_dir: str | os.PathLike | None, path: str | os.PathLike) -> str | None:
    """The SHA-256 a stamp recorded for `path` if the file is unchanged since, else None."""
    if cache_dir is None:
        return None
    path = Path(path)
    try:
        stamp = json.loads(_stamp_path(cache_dir, path).read_text())
        if stamp["path"] == str(path.resolve()) and stamp["identity"] == identity(path):
            return stamp["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def write_stamp(cache_dir: str | os.PathLike | None, path: str | os.PathLike, sha256: str, before: list[int]) -> None:
    """Record that `path` hashed to `sha256` and was checked, if its identity is still `before` (taken before
    hashing: a file that changed meanwhile gets no stamp). Best effort: a read-only cache costs a hash next time."""
    if cache_dir is None:
        return
    path = Path(path)
    target = _stamp_path(cache_dir, path)
    try:
        if identity(path) != before:
            return
    except OSError:
        return
    stamp = json.dumps({"path": str(path.resolve()), "identity": before, "sha256": sha256})
    write_whole(target, lambda partial: partial.write_text(stamp))
