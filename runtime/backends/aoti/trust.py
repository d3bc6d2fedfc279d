"""Whether a compiled AOTInductor package on disk may be loaded as native code: who could write it, its SHA-256.

A package is a shared library that loading runs, so the local cache folder is treated as ssh treats key files:
the package, its sidecar and every folder from it up to the cache root must be this uid's and not writable by
its group or others, or it is not loaded. The sidecar `<package>.sha256` (sha256sum's format, so
`sha256sum -c` reads it) is written right after a package is compiled or fetched and checked before each load,
which catches a torn or damaged file; it proves nothing about a file someone else could have rewritten with it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from runtime.artifact.checksum import file_sha256

DIGEST_SUFFIX = ".sha256"
PACKAGE_MODE = 0o644  # readable by all is fine; only the owner may change native code it loads
FOLDER_MODE = 0o755
_HEX = re.compile(r"[0-9a-f]{64}")


def sidecar(path: Path) -> Path:
    """The SHA-256 sidecar of the package at `path`."""
    return path.with_name(path.name + DIGEST_SUFFIX)


def writable_by_others(path: Path) -> str | None:
    """Why someone other than this process's user could have written `path`, or None: not a symbolic link,
    owned by this uid, no group or other write bit."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"{path} cannot be checked ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if st.st_uid != os.getuid():
        return f"{path} is owned by uid {st.st_uid}, not by this process's uid {os.getuid()}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by its group or others (mode {stat.S_IMODE(st.st_mode):04o}; chmod go-w it)"
    return None


def unsafe_folders(folder: Path, root: Path) -> str | None:
    """Why a folder from `root` (an ancestor of `folder`, or `folder` itself) down to `folder` is not safe, or None."""
    chain = [folder, *folder.parents]
    for level in reversed(chain[: chain.index(root) + 1]):
        if why := writable_by_others(level):
            return why
    return None


def make_folders(folder: Path, root: Path) -> None:
    """`folder` and the folders between it and `root`, made writable by their owner only."""
    root.mkdir(parents=True, exist_ok=True)
    chain = [folder, *folder.parents]
    for level in reversed(chain[: chain.index(root)]):
        level.mkdir(mode=FOLDER_MODE, exist_ok=True)


def read_digest(path: Path) -> str | None:
    """The SHA-256 a sidecar file names (its first 64 hex digits), or None when it names none."""
    with open(path, "rb") as f:
        head = f.read(256).decode("ascii", "replace").split()
    return head[0] if head and _HEX.fullmatch(head[0]) else None


def seal(path: Path, sha256: str | None = None) -> str:
    """Make the package at `path` owner-writable only and write its sidecar; returns its SHA-256."""
    os.chmod(path, PACKAGE_MODE)
    sha256 = sha256 or file_sha256(path)
    side = sidecar(path)
    partial = side.with_name(f"{side.name}.{os.getpid()}.partial")
    partial.write_text(f"{sha256}  {path.name}\n")
    os.chmod(partial, PACKAGE_MODE)
    partial.replace(side)
    return sha256


def unusable(path: Path) -> str | None:
    """Why the package at `path` (its folders already checked) must not be loaded, or None."""
    for why in (writable_by_others(path), writable_by_others(sidecar(path))):
        if why:
            return why
    expected = read_digest(sidecar(path))
    if expected is None:
        return f"{sidecar(path)} holds no SHA-256"
    actual = file_sha256(path)
    if actual != expected:
        return f"{path} has SHA-256 {actual[:12]}…, its sidecar says {expected[:12]}…: the file is torn or damaged"
    return None
