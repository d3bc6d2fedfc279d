"""The output file of one shard: one Parquet file of rows keyed to the samples, written whole in one PutObject."""

from __future__ import annotations

import dataclasses
import io
import os
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from runtime.untrusted.samples import ShardError

CONTENT_TYPE = "application/vnd.apache.parquet"
COMPRESSION = "zstd"
SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),
        pa.field("image_sha256", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("error", pa.string()),
        pa.field("model", pa.string(), nullable=False),
        pa.field("model_sha256", pa.string(), nullable=False),
        pa.field("settings", pa.string(), nullable=False),
        pa.field("prompt_sha256", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)


@dataclasses.dataclass
class Row:
    """One sample's outcome: exactly one of `caption` and `error` is set (checked by `render`)."""

    key: str  # the webdataset __key__, the Parquet key column's value, or the manifest URI's key
    uri: str  # s3://bucket/shardkey#<key>, or the image's own URI for a manifest of keys
    shard: str  # the input shard's URI
    index: int  # order in the shard
    image_sha256: str | None
    caption: str | None
    error: str | None
    model: str
    model_sha256: str
    settings: str  # the generation settings' fingerprint (ledger.settings_fingerprint)
    prompt_sha256: str | None = None


def render(rows: list[Row]) -> bytes:
    """The whole output file in memory (zstd), so it is put in one request: a reader sees all of it or none.

    A row with both or neither of caption and error is a bug of the caller: ValueError, before anything is written.
    """
    for row in rows:
        if (row.caption is None) == (row.error is None):
            raise ValueError(f"row {row.index} ({row.key!r}) must have exactly one of caption and error")
    columns = {name: [getattr(row, name) for row in rows] for name in COLUMNS}
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=COMPRESSION)
    return sink.getvalue()


def read(source: bytes | str | os.PathLike | BinaryIO) -> pa.Table:
    """An output file as a table (its bytes, a path or a file), refused unless its columns are exactly COLUMNS."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = pa.BufferReader(source)
    try:
        table = pq.read_table(source)
    except (pa.ArrowException, OSError) as error:
        raise ShardError(f"not a Parquet output file: {error}") from error
    if tuple(table.schema.names) != COLUMNS:
        raise ShardError(f"not a CaptionKit output file: columns {table.schema.names}, expected {list(COLUMNS)}")
    try:
        return table.cast(SCHEMA)
    except (pa.ArrowException, ValueError) as error:
        raise ShardError(f"not a CaptionKit output file: {error}") from error
