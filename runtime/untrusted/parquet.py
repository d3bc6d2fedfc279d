"""Parquet files anyone may write (shards, key lists, collected outputs), read in a decoding child over ranged GETs.

The parent holds the S3 side (`RangedFile`: ranged GETs pinned to one eTag) and answers the child's reads; the child
(runtime.untrusted.parquet_child) runs pyarrow under the sandbox's limits and sends back plain values. Whatever the
file does to pyarrow (an abort, a stack overflow, an allocation past the limit, a row group that spins) ends as one
ShardError naming it; an S3 error while serving a read propagates unchanged, for the caller to classify.
"""

from __future__ import annotations

import io
import json
from typing import BinaryIO, Iterator

from runtime.untrusted import sandbox
from runtime.untrusted.samples import MAX_KEY_BYTES, Sample, ShardError
from runtime.untrusted.windowed import WindowedFile
from runtime.untrusted.wire import READ_AHEAD

MAX_ROW_GROUP_BYTES = 512 * 1024 * 1024
MAX_OUTPUT_CELL_BYTES = 64 * 1024  # an output row's longest text: a caption, an error (2,000), a URI, the settings


class RangedFile(WindowedFile):
    """A seekable read-only file over ranged GETs of one S3 object, pinned to its eTag when one is given.

    A read that misses fetches a READ_AHEAD window from it (moved back where it would pass the end, so the footer's
    reads share one GET), and the last two windows are kept (a read that goes back a little costs no new GET). A
    read larger than a window is one GET of its own, kept as a window: a column chunk whose pages were checked is
    then read by pyarrow from the same bytes, without a second GET. S3 errors propagate unchanged
    (PreconditionFailed when the object was replaced since it was listed): the caller classifies them.
    """

    def __init__(self, s3, bucket: str, key: str, size: int, etag: str | None = None, read_ahead: int = READ_AHEAD):
        super().__init__(size, read_ahead)
        self.s3, self.bucket, self.key, self.etag = s3, bucket, key, etag
        self.requests = 0
        self.failure: Exception | None = None

    def _fetch(self, start: int, end: int) -> bytes:
        """Bytes [start, end) in one GET; an S3 error is kept as `failure` (pyarrow re-raises it as it is)."""
        extra = {"IfMatch": f'"{self.etag.strip(chr(34))}"'} if self.etag else {}
        self.requests += 1
        try:
            reply = self.s3.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end - 1}", **extra)
            data = reply["Body"].read()
        except Exception as error:
            self.failure = error
            raise
        if len(data) != end - start:
            raise ShardError(
                f"s3://{self.bucket}/{self.key} is shorter than its listed {self._size:,} bytes "
                f"(bytes {start:,}-{end - 1:,} gave {len(data):,})"
            )
        return data


class BytesFile(io.BytesIO):
    """Bytes in memory as a file the child may read (`size()` as RangedFile has it)."""

    def size(self) -> int:
        return len(self.getbuffer())


def _size(file: BinaryIO) -> int:
    return file.size() if hasattr(file, "size") else file.seek(0, io.SEEK_END)


def _stream(op: str, file: BinaryIO, args: dict, pool: sandbox.Sandbox | None, what: str):
    pool = pool or sandbox.shared()
    return pool.stream(op, {**args, "size": _size(file)}, file=file, what=what, error=ShardError)


def inspect(
    file: BinaryIO, image_column: str | None = None, key_column: str | None = None, pool: sandbox.Sandbox | None = None
) -> tuple[str, str | None, int]:
    """(image column, key column or None, rows) of a shard from its footer alone, or ShardError saying why not.

    A key taken from the image struct's `path` is "<image column>.path"; iter_samples accepts that name back.
    """
    end = None
    for header, _ in _stream(
        "parquet.inspect", file, {"image_column": image_column, "key_column": key_column}, pool, "the Parquet reader"
    ):
        end = header.get("end")
    if not (
        isinstance(end, dict)
        and isinstance(end.get("image"), str)
        and isinstance(end.get("rows"), int)
        and (end.get("key") is None or isinstance(end.get("key"), str))
    ):
        raise ShardError("the Parquet reader answered what it may not")
    return end["image"], end["key"], end["rows"]


def iter_samples(
    file: BinaryIO,
    *,
    image_column: str | None = None,
    key_column: str | None = None,
    max_member_bytes: int,
    max_samples: int,
    max_row_group_bytes: int = MAX_ROW_GROUP_BYTES,
    pool: sandbox.Sandbox | None = None,
) -> Iterator[Sample]:
    """The rows of a Parquet shard as samples, in order, one row group in the child's memory at a time.

    A row without a usable image (a null cell, a struct without bytes, over max_member_bytes) or with an unusable
    key is an error row; a shard that cannot be read at all raises ShardError, before any sample where the footer
    shows it (too many rows, a row group too large by its footer, no image column), and after the samples before it
    where only reading shows it (a row group whose chunks hold fewer rows than declared, a reader that died).
    """
    args = {
        "image_column": image_column,
        "key_column": key_column,
        "max_member_bytes": max_member_bytes,
        "max_samples": max_samples,
        "max_row_group_bytes": max_row_group_bytes,
    }
    expected = 0
    for header, blobs in _stream("parquet.samples", file, args, pool, "the Parquet reader"):
        if "end" in header:
            return
        rows = header.get("rows")
        if not isinstance(rows, list) or len(blobs) > len(rows):
            raise ShardError(f"the Parquet reader answered what it may not at row {expected}")
        for row in rows:
            key, index, error, blob = (
                (row.get("key"), row.get("index"), row.get("error"), row.get("blob"))
                if isinstance(row, dict)
                else (None, None, None, None)
            )
            data = blobs[blob] if isinstance(blob, int) and 0 <= blob < len(blobs) else None
            if not (
                isinstance(key, str)
                and len(key) <= 4 * MAX_KEY_BYTES
                and index == expected
                and expected < max_samples
                and (error is None) == (data is not None)
                and (error is None or isinstance(error, str))
                and (data is None or len(data) <= max_member_bytes)
            ):
                raise ShardError(f"the Parquet reader answered what it may not at row {expected}")
            expected += 1
            yield Sample(key, index, data, error[:2000] if error is not None else None)


def iter_values(
    file: BinaryIO,
    *,
    key_column: str | None,
    guesses: tuple[str, ...],
    bucket_column: bool,
    max_value_bytes: int,
    max_row_group_bytes: int,
    pool: sandbox.Sandbox | None = None,
) -> Iterator[tuple[str, object, object]]:
    """(column name, key cell, bucket cell or None) of each row of a key list; a cell that is not text is
    {"not_text": True} or {"too_long": size} for the caller to refuse, naming the row."""
    args = {
        "key_column": key_column,
        "guesses": list(guesses),
        "bucket_column": bucket_column,
        "max_value_bytes": max_value_bytes,
        "max_row_group_bytes": max_row_group_bytes,
    }
    for header, blobs in _stream("parquet.column", file, args, pool, "the Parquet reader"):
        if "end" in header:
            return
        column = header.get("column")
        try:
            batch = json.loads(blobs[0]) if len(blobs) == 1 else None
        except ValueError:
            batch = None
        if not isinstance(column, str) or not isinstance(batch, list):
            raise ShardError("the Parquet reader answered what it may not")
        for cell in batch:
            if not (isinstance(cell, list) and len(cell) == 2):
                raise ShardError("the Parquet reader answered what it may not")
            yield column, cell[0], cell[1]


def iter_rows(
    file: BinaryIO,
    *,
    columns: tuple[str, ...],
    max_row_group_bytes: int = MAX_ROW_GROUP_BYTES,
    max_cell_bytes: int = MAX_OUTPUT_CELL_BYTES,
    pool: sandbox.Sandbox | None = None,
) -> Iterator[list]:
    """Batches of an output file's rows (dicts of `columns`), once the child found its columns as expected and no
    cell longer than `max_cell_bytes`."""
    args = {"columns": list(columns), "max_cell_bytes": max_cell_bytes, "max_row_group_bytes": max_row_group_bytes}
    for header, blobs in _stream("parquet.rows", file, args, pool, "the Parquet reader"):
        if "end" in header:
            return
        try:
            batch = json.loads(blobs[0]) if len(blobs) == 1 else None
        except ValueError:
            batch = None
        if not isinstance(batch, list) or not all(
            isinstance(r, dict)
            and list(r) == list(columns)
            and all(v is None or isinstance(v, (str, int)) for v in r.values())
            for r in batch
        ):
            raise ShardError("the Parquet reader answered rows that are not an output's")
        yield batch
