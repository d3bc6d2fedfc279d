"""The caption table every CaptionKit output shares (the caption CLI, `make collect`): its columns and its files.

Each row is one image: `uri` (where it was read), `key` (its name inside what was asked for: a path relative to the
folder, a key relative to the prefix, a sample's key), then either `caption` or `error` (the other is null),
`model` and `model_sha256`. Errors are rows of the same file, never a side file. A dataset job's rows carry its
further columns after these. The file's extension decides the format: `.jsonl`, `.csv` or `.parquet`; any other is
refused. A file is written beside its target and moved into place when complete, and an existing file is replaced
only when asked (`overwrite`), so an earlier run's output is never lost to a failed or mistaken one.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterable, TextIO

from runtime.errors import CaptionKitError

COLUMNS = ("uri", "key", "caption", "error", "model", "model_sha256")
EXTENSIONS = (".jsonl", ".csv", ".parquet")
ROW_GROUP = 1000


class OutputRefused(CaptionKitError, ValueError):
    """An output path this table will not write: an unknown extension, or an existing file without overwrite."""


def check_out(out: str | os.PathLike, *, overwrite: bool = False, flag: str = "--overwrite") -> Path:
    """`out` as a Path once its extension is known and it may be written; OutputRefused (one line) otherwise."""
    path = Path(out)
    if path.suffix.lower() not in EXTENSIONS:
        raise OutputRefused(
            f"{path}: unknown output type {path.suffix or '(no extension)'!r}; name it .jsonl, .csv or .parquet"
        )
    if path.is_dir():
        raise OutputRefused(f"{path} is a folder; name a .jsonl, .csv or .parquet file")
    if path.exists() and not overwrite:
        raise OutputRefused(f"{path} exists (an earlier run's output); choose another name or pass {flag}")
    return path


def dump_line(row: dict) -> str:
    """One JSON Lines row, UTF-8 as is (`café`, not `caf\\u00e9`)."""
    return json.dumps(row, ensure_ascii=False) + "\n"


class _Jsonl:
    def __init__(self, handle: TextIO, columns: tuple[str, ...]) -> None:
        self.handle, self.columns = handle, columns

    def rows(self, rows: Iterable[dict]) -> None:
        self.handle.writelines(dump_line({c: row.get(c) for c in self.columns}) for row in rows)

    def close(self) -> None:
        self.handle.close()


class _Csv(_Jsonl):
    def __init__(self, handle: TextIO, columns: tuple[str, ...]) -> None:
        super().__init__(handle, columns)
        self.writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        self.writer.writeheader()

    def rows(self, rows: Iterable[dict]) -> None:
        self.writer.writerows({c: "" if row.get(c) is None else row.get(c) for c in self.columns} for row in rows)


class _Parquet:
    def __init__(self, path: Path, columns: tuple[str, ...], schema) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.schema = schema or pa.schema([(c, pa.string()) for c in columns])
        self.writer, self.pending = pq.ParquetWriter(path, self.schema, compression="zstd"), []

    def rows(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.pending.append(row)
            if len(self.pending) >= ROW_GROUP:
                self._flush()

    def table(self, table) -> None:
        self._flush()
        self.writer.write_table(table.select(self.schema.names).cast(self.schema))

    def _flush(self) -> None:
        import pyarrow as pa

        if self.pending:
            self.writer.write_table(pa.Table.from_pylist(self.pending, schema=self.schema))
            self.pending = []

    def close(self) -> None:
        self._flush()
        self.writer.close()


class TableWriter:
    """Rows into `out` (checked by `check_out`): written to `<out>.partial`, moved over `out` by `close()`, removed
    by `abort()` (a context manager does one or the other)."""

    def __init__(self, out: Path, columns: tuple[str, ...] = COLUMNS, *, schema=None) -> None:
        self.out, self.columns = Path(out), tuple(schema.names) if schema is not None else columns
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.out.with_name(self.out.name + ".partial")
        kind = self.out.suffix.lower()
        if kind == ".parquet":
            self.impl = _Parquet(self.partial, self.columns, schema)
        else:
            handle = open(self.partial, "w", encoding="utf-8", newline="" if kind == ".csv" else None)
            self.impl = (_Csv if kind == ".csv" else _Jsonl)(handle, self.columns)
        self.count = 0

    def write(self, row: dict) -> None:
        self.impl.rows([{c: row.get(c) for c in self.columns}])
        self.count += 1

    def write_table(self, table) -> None:
        """A pyarrow table's rows (a dataset job's shard file), its columns put in this file's order."""
        if isinstance(self.impl, _Parquet):
            self.impl.table(table)
        else:
            for batch in table.select(list(self.columns)).to_batches(max_chunksize=1024):
                self.impl.rows(batch.to_pylist())
        self.count += table.num_rows

    def close(self) -> None:
        self.impl.close()
        os.replace(self.partial, self.out)

    def abort(self) -> None:
        try:
            self.impl.close()
        finally:
            self.partial.unlink(missing_ok=True)

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, kind, *_exc) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
