"""One JSON line per finished benchmark case, appended and flushed at once, so a stage killed later loses no case."""

from __future__ import annotations

import json
import os


def append_case(path: str | os.PathLike | None, record: dict) -> None:
    """Append `record` as one line to `path` (nothing when None), flushed to the disk before returning."""
    if not path:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
        out.flush()
        os.fsync(out.fileno())


def read_cases(path: str | os.PathLike) -> list[dict]:
    """The records `append_case` wrote; a last line cut short by a kill is left out."""
    records = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
