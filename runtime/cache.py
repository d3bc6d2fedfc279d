"""The local cache folder: every key in it, the write-whole rule, and the verified stamps.

Layout under the cache folder (`DEFAULT_DIR` unless the caller names one; the agent's `cache_dir`):
  <sha256>.pt2                               an artifact the agent downloaded (`artifact_file`)
  verified/<sha256 of the real path>.json    a stamp: a file hashed and checked, and its identity then
  int8/<artifact sha256>-<build digest>.pt   the int8 weights `quantize=int8` made (runtime.passes.quantize)
  compiled/<artifact sha256>/<torch>/<device>.pt2 (+ .sha256)   an AOTInductor package (runtime.backends.aoti)
  device-journal.json                        the images on the device during a device call (runtime.agent.crashes)

Every file is written whole or not at all (`write_whole`). The cache is untrusted input: its readers check what
they read (a stamp must match the file's identity, int8 weights their linears, a package its folder and sidecar).

A stamp holds the SHA-256 found plus the file's identity as the kernel reports it: device, inode, size,
modification and change times. Any write, truncation, `touch`, copy or replacement changes at least the size, the
inode or the change time (ctime cannot be set from user space), so the stamp stops matching.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

DEFAULT_DIR = "~/.cache/captionkit"
STAMP_DIR = "verified"
INT8_DIR = "int8"
COMPILED_DIR = "compiled"
JOURNAL = "device-journal.json"


def folder(cache_dir: str | os.PathLike) -> Path:
    """The cache folder, `~` expanded."""
    return Path(cache_dir).expanduser()


def artifact_file(cache_dir: str | os.PathLike, sha256: str) -> Path:
    """`<cache>/<sha256>.pt2`: where the agent keeps the artifact the pointer names."""
    return folder(cache_dir) / f"{sha256}.pt2"


def int8_file(cache_dir: str | os.PathLike | None, sha256: str, build: str) -> Path | None:
    """`<cache>/int8/<sha256>-<build>.pt`, or None without a cache folder or a known SHA-256."""
    if cache_dir is None or not sha256:
        return None
    return folder(cache_dir) / INT8_DIR / f"{sha256}-{build}.pt"


def compiled_root(cache_dir: str | os.PathLike) -> Path:
    """The folder compiled packages go under, by their store key (runtime.backends.aoti.cache_key)."""
    return folder(cache_dir).resolve() / COMPILED_DIR


def journal_file(cache_dir: str | os.PathLike) -> Path:
    """`<cache>/device-journal.json`."""
    return folder(cache_dir) / JOURNAL


def write_whole(path: Path, write: Callable[[Path], object]) -> OSError | None:
    """`write(temporary)` then rename it to `path` (parent folders made). Best effort: returns the OSError of a
    read-only or full cache instead of raising, so a cache that cannot be written only costs time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        write(partial)
        partial.replace(path)
    except OSError as exc:
        return exc
    return None


def identity(path: str | os.PathLike) -> list[int]:
    """The file's identity for a stamp; take it before hashing and pass it to `write_stamp`."""
    st = Path(path).stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _stamp_path(cache_dir: str | os.PathLike, path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return folder(cache_dir) / STAMP_DIR / f"{key}.json"


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


def stamped_or_hashed(
    cache_dir: str | os.PathLike | None,
    path: str | os.PathLike,
    hash_file: Callable[[], str],
    keep: Callable[[str], bool] = lambda sha256: True,
) -> str:
    """The file's SHA-256: its stamp's if the file is unchanged since, else `hash_file()` (which also checks
    whatever its caller needs), stamped when `keep(sha256)` says the result is one to trust next time."""
    if sha := stamped_sha256(cache_dir, path):
        return sha
    before = identity(path)
    sha = hash_file()
    if keep(sha):
        write_stamp(cache_dir, path, sha, before)
    return sha
