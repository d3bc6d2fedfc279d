"""Parquet shards read over ranged S3 GETs: the footer first, then one row group at a time, the leaves needed only.

A shard is untrusted: parquet_bounded checks its footer and each row group's footer sizes and page headers before
pyarrow allocates them; here the row count is checked against max_samples and the image column's type, and every
row group by its footer before the first sample. Dictionary cells (byte-array leaves are read as dictionaries) are
looked up, never expanded.
"""
from __future__ import annotations

import io
from typing import BinaryIO, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runtime.agent.datasets.parquet_bounded import GroupReader, open_footer, python_values
from runtime.agent.datasets.samples import MAX_KEY_BYTES, Sample, ShardError

READ_AHEAD = 1024 * 1024  # one GET fetches at least this much: pyarrow's small reads then cost no request each
MAX_ROW_GROUP_BYTES = 512 * 1024 * 1024
KEY_GUESSES = ("__key__", "key", "id", "image_id", "file_name", "filename", "path")
IMAGE_GUESSES = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes")
EXPECTED = "binary, large_binary, or a struct with a binary `bytes` field (HF datasets Image())"


class RangedFile(io.RawIOBase):
    """A seekable read-only file over ranged GETs of one S3 object, pinned to its eTag when one is given.

    A read that misses fetches a READ_AHEAD window from it (moved back where it would pass the end, so the footer's
    reads share one GET), and the last two windows are kept (a read that goes back a little costs no new GET). A
    read larger than a window is one GET of its own, kept as a window: a column chunk whose pages were checked is
    then read by pyarrow from the same bytes, without a second GET. S3 errors propagate unchanged
    (PreconditionFailed when the object was replaced since it was listed): the caller classifies them.
    """

    WINDOWS = 2

    def __init__(self, s3, bucket: str, key: str, size: int, etag: str | None = None, read_ahead: int = READ_AHEAD):
        super().__init__()
        self.s3, self.bucket, self.key, self.etag = s3, bucket, key, etag
        self._size, self._pos, self.read_ahead = size, 0, read_ahead
        self._windows: list[tuple[int, bytes]] = []  # (offset, bytes), the latest first
        self.requests = 0
        self.failure: Exception | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        start = self._pos
        end = self._size if n is None or n < 0 else min(self._size, start + n)
        if end <= start:
            return b""
        for at, window in self._windows:
            if at <= start and end <= at + len(window):
                data = window[start - at:end - at]
                break
        else:
            if end - start >= self.read_ahead:
                at, window = start, self._get(start, end)
            else:
                at = max(0, min(start, self._size - self.read_ahead))
                window = self._get(at, min(self._size, at + self.read_ahead))
            self._windows = [(at, window), *self._windows[:self.WINDOWS - 1]]
            data = window[start - at:end - at]
        self._pos = end
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _get(self, start: int, end: int) -> bytes:
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
            raise ShardError(f"s3://{self.bucket}/{self.key} is shorter than its listed {self._size:,} bytes "
                             f"(bytes {start:,}-{end - 1:,} gave {len(data):,})")
        return data


def _is_binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)


def _is_image(kind: pa.DataType) -> bool:
    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and _is_binary(kind.field(index).type)
    return _is_binary(kind)


def _is_key(kind: pa.DataType) -> bool:
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
            or pa.types.is_integer(kind) or _is_binary(kind))


def _resolve(schema: pa.Schema, image_column: str | None, key_column: str | None) -> tuple[str, str | None]:
    """(image column, key column or "<image>.path" or None), named or guessed, or ShardError saying why not."""
    names = schema.names
    listed = ", ".join(names[:50]) + (f" and {len(names) - 50} more" if len(names) > 50 else "")
    if image_column is not None:
        if image_column not in names:
            raise ShardError(f"no image column {image_column!r} in the shard (columns: {listed})")
        found = schema.field(image_column).type
        if not _is_image(found):
            raise ShardError(f"the image column {image_column!r} is {found}; expected {EXPECTED}")
    else:
        usable = [name for name in names if _is_image(schema.field(name).type)]
        named = [name for name in usable if name.lower() in IMAGE_GUESSES]
        if not usable:
            raise ShardError(f"no image column in the shard: none of its columns ({listed}) is {EXPECTED}")
        if len(usable) > 1 and not named:
            raise ShardError(f"several columns could be the image ({', '.join(usable[:20])}): name one with "
                             f"image_column")
        image_column = (named or usable)[0]
    kind = schema.field(image_column).type
    path = pa.types.is_struct(kind) and kind.get_field_index("path") >= 0 and _is_key(kind.field("path").type)
    if key_column is not None:
        if key_column == image_column:
            raise ShardError(f"the key column {key_column!r} is the image column: name another (or none)")
        if key_column == f"{image_column}.path" and key_column not in names and path:
            return image_column, key_column
        if key_column not in names:
            raise ShardError(f"no key column {key_column!r} in the shard (columns: {listed})")
        if not _is_key(schema.field(key_column).type):
            raise ShardError(f"the key column {key_column!r} is {schema.field(key_column).type}; expected strings, "
                             f"integers or bytes")
        return image_column, key_column
    for name in KEY_GUESSES:
        if name in names and name != image_column and _is_key(schema.field(name).type):
            return image_column, name
    if path:
        return image_column, f"{image_column}.path"
    return image_column, None


def inspect(file: BinaryIO, image_column: str | None = None,
            key_column: str | None = None) -> tuple[str, str | None, int]:
    """(image column, key column or None, rows) of a shard from its footer alone, or ShardError saying why not.

    A key taken from the image struct's `path` is "<image column>.path"; iter_samples accepts that name back.
    """
    shard = open_footer(file)
    image, key = _resolve(shard.schema_arrow, image_column, key_column)
    return image, key, shard.metadata.num_rows


def _leaves(schema: pa.Schema, image: str, key: str | None) -> list[str]:
    """The column paths read: the image (of a struct, its `bytes` and any `path`), and a key column of its own."""
    kind = schema.field(image).type
    leaves = [image]
    if pa.types.is_struct(kind):
        leaves = [f"{image}.bytes"]
        if kind.get_field_index("path") >= 0 and _is_key(kind.field("path").type):
            leaves.append(f"{image}.path")
    if key is not None and key not in leaves:
        leaves.append(key)
    return leaves


def iter_samples(file: BinaryIO, *, image_column: str | None = None, key_column: str | None = None,
                 max_member_bytes: int, max_samples: int,
                 max_row_group_bytes: int = MAX_ROW_GROUP_BYTES) -> Iterator[Sample]:
    """The rows of a Parquet shard as samples, in order, one row group in memory at a time.

    A row without a usable image (a null cell, a struct without bytes, over max_member_bytes) or with an unusable
    key is an error row; a shard that cannot be read at all raises ShardError, before any sample where the footer
    shows it (too many rows, a row group too large, no image column), and before a row group's first sample where
    its page headers show it (a page too large, an encoding refused).
    """
    shard = open_footer(file)
    image, key = _resolve(shard.schema_arrow, image_column, key_column)
    metadata = shard.metadata
    if metadata.num_rows > max_samples:
        raise ShardError(f"the shard has {metadata.num_rows:,} rows, over the limit of {max_samples:,} "
                         f"(max_shard_samples)")
    struct_path = key is not None and key not in shard.schema_arrow.names
    reader = GroupReader(shard, file, _leaves(shard.schema_arrow, image, None if struct_path else key),
                         max_row_group_bytes, "max_row_group_bytes")
    for group in range(metadata.num_row_groups):
        reader.check_footer(group)
    index = 0
    for group in range(metadata.num_row_groups):
        table = reader.read(group)
        images = table.column(image)
        keys = pc.struct_field(images, "path") if struct_path else table.column(key) if key is not None else None
        values = _key_values(keys) if keys is not None else None
        offset = 0
        for chunk in images.chunks:
            for row in range(len(chunk)):
                value = values[offset + row] if values is not None else index  # no key column: the row number
                yield _sample(chunk[row], value, index, max_member_bytes)
                index += 1
            offset += len(chunk)


def _key_values(keys: pa.ChunkedArray) -> list:
    """A row group's keys as Python values: text as bytes (checked as UTF-8 row by row, not trusted), ints as ints."""
    return python_values(keys, as_bytes=True)


def _key(value, index: int) -> tuple[str, str | None]:
    """(the key as text, why it is unusable or None): a null key is "row-<n>"."""
    if value is None:
        return f"row-{index}", None
    if isinstance(value, int):
        return str(value), None
    try:
        key = value.decode("utf-8")
    except UnicodeDecodeError:
        return value[:MAX_KEY_BYTES].decode("utf-8", "backslashreplace"), f"key is not valid UTF-8: {value[:64]!r}"
    if len(value) > MAX_KEY_BYTES:
        return key[:MAX_KEY_BYTES], f"key of {len(value):,} bytes, over the limit of {MAX_KEY_BYTES:,}"
    return key, None


def _sample(cell: pa.Scalar, value, index: int, max_member_bytes: int) -> Sample:
    """One row's sample: its image bytes, or why the row cannot be used."""
    key, error = _key(value, index)
    if error is not None:
        return Sample(key, index, None, error)
    cell = _undictionary(cell)
    if not cell.is_valid:
        return Sample(key, index, None, "the image cell is null")
    if isinstance(cell, pa.StructScalar):
        path = _undictionary(cell.get("path"))
        cell = _undictionary(cell["bytes"])
        if not cell.is_valid:
            shown = _shown(path) if path is not None and path.is_valid else None
            return Sample(key, index, None, "the image struct has no bytes" + (f" (path {shown})" if shown else ""))
    size = len(cell.as_buffer())
    if size > max_member_bytes:
        return Sample(key, index, None, f"the image is {size:,} bytes, over the limit of {max_member_bytes:,} "
                                        f"(max_image_bytes)")
    return Sample(key, index, cell.as_py(), None)


def _undictionary(scalar: pa.Scalar | None) -> pa.Scalar | None:
    """The entry a dictionary cell points at (a null cell stays null); other cells unchanged."""
    if isinstance(scalar, pa.DictionaryScalar):
        return scalar.value if scalar.is_valid else pa.scalar(None, scalar.type.value_type)
    return scalar


def _shown(scalar: pa.Scalar) -> str:
    raw = scalar.cast(pa.large_binary()).as_py() if not pa.types.is_integer(scalar.type) else b"%d" % scalar.as_py()
    return repr(raw[:200].decode("utf-8", "backslashreplace"))
