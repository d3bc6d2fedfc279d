"""Files in the local cache are written whole or not at all: to a per-process temporary name, then renamed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


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
