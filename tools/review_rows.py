"""Caption rows for the review page: a rows file (.jsonl, .csv, .parquet) read into dicts, and a seeded sample."""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
from pathlib import Path
from typing import Iterable, Iterator

# The leading columns of every caption row (`make caption OUT=`, `make collect`): a caption or an error, never both.
ROW_COLUMNS = ("uri", "key", "caption", "error", "model", "model_sha256")
ROW_SUFFIXES = (".jsonl", ".csv", ".parquet")
DEFAULT_SAMPLE = 300


class RowsError(ValueError):
    """A rows file that cannot be read as caption rows: says which file, what was found and what was expected."""


def read_rows(path: str | Path) -> Iterator[dict]:
    """The rows of a `.jsonl`, `.csv` or `.parquet` file (chosen by its extension) as dicts, in file order.

    A row lacking a contract column is refused with its line; empty strings in a CSV cell read as None, since CSV
    cannot tell a null from an empty text.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ROW_SUFFIXES:
        raise RowsError(f"{path}: a rows file ends in {', '.join(ROW_SUFFIXES)}, not {suffix or 'nothing'!r}")
    if not path.is_file():
        raise RowsError(f"{path}: no such file; give the OUT= of a `make caption` or `make collect` run")
    reader = {".jsonl": _jsonl, ".csv": _csv, ".parquet": _parquet}[suffix]
    for number, row in enumerate(reader(path), 1):
        missing = [name for name in ROW_COLUMNS if name not in row]
        if missing:
            raise RowsError(
                f"{path}: row {number} lacks {missing}; expected the columns {list(ROW_COLUMNS)} first "
                "(written by `make caption OUT=` or `make collect`)"
            )
        yield row


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RowsError(f"{path}: line {number} is not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise RowsError(f"{path}: line {number} is a JSON {type(row).__name__}, expected an object")
            yield row


def _csv(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            yield {name: (value if value != "" else None) for name, value in row.items()}


def _parquet(path: Path) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise RowsError(f"{path}: not a Parquet file ({exc})") from None
    for batch in file.iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def sample(rows: Iterable[dict], n: int | None, seed: int = 0) -> tuple[list[dict], int]:
    """(at most `n` rows in input order, all when n is None; how many rows there were), chosen by a seeded hash of
    each row's uri and model, holding n rows at a time.

    The choice depends on the seed and the rows themselves, not on their order or count, so a job that grows keeps
    the rows it had in its sample unless a newcomer ranks before them.
    """
    if n is None:
        everything = list(rows)
        return everything, len(everything)
    if n < 1:
        raise ValueError(f"a sample of {n} rows: give at least 1")
    seen = [0]

    def numbered() -> Iterator[tuple[int, dict]]:
        for seen[0], row in enumerate(rows, 1):
            yield seen[0], row

    ranked = heapq.nsmallest(n, numbered(), key=lambda item: _rank(item[1], seed))
    return [row for _, row in sorted(ranked, key=lambda item: item[0])], seen[0]


def _rank(row: dict, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\0{row.get('uri')}\0{row.get('model_sha256')}".encode()).digest()
