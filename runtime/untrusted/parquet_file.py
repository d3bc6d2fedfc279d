"""A Parquet file read through the decoding child's pipe: its bytes, its footer and its row groups, each checked.

Runs inside the child only (runtime.untrusted.parquet_child). `PipeFile` asks the parent for the file's bytes a window
at a time; `open_footer` bounds the footer before pyarrow reads it and checks its row counts after; `Groups` reads the
asked-for columns of one row group at a time, its size by the footer checked first and its row count after.
"""

from __future__ import annotations

import io
import struct

import pyarrow as pa
import pyarrow.parquet as pq

from runtime.untrusted.samples import ShardError
from runtime.untrusted.windowed import WindowedFile

MAX_FOOTER_BYTES = 16 * 1024 * 1024


class PipeFile(WindowedFile):
    """A seekable read-only file whose bytes come from the parent (`channel.read_at`), a READ_AHEAD window at a time
    (the last two kept), so pyarrow's many small reads cost the parent a few requests, not one each."""

    def __init__(self, channel, size: int):
        super().__init__(size)
        self.channel = channel

    def _fetch(self, start: int, end: int) -> bytes:
        return self.channel.read_at(start, end - start)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """As a file seeks, except that a position before the start is the start (an offset the footer gives)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos


def open_footer(file) -> pq.ParquetFile:
    """The file's footer, its length checked before pyarrow reads it and its row counts after."""
    size = file.size()
    if size < 12:
        raise ShardError(f"not a Parquet file: {size} bytes")
    file.seek(size - 8)
    tail = file.read(8)
    file.seek(0)
    if tail[4:] != b"PAR1":
        raise ShardError("not a Parquet file: no PAR1 magic at its end")
    (footer,) = struct.unpack("<I", tail[:4])
    if footer > min(MAX_FOOTER_BYTES, size - 12):
        raise ShardError(
            f"not a usable Parquet file: a footer of {footer:,} bytes in a file of {size:,} (at most "
            f"{MAX_FOOTER_BYTES:,})"
        )
    try:
        shard = pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as error:
        raise refused(error, "not a Parquet file") from None
    metadata = shard.metadata
    leaves = len(shard.schema)
    groups = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        if row_group.num_columns != leaves:
            raise ShardError(
                f"not a usable Parquet file: row group {group} lists {row_group.num_columns} column "
                f"chunks and the schema has {leaves} leaves"
            )
        groups += row_group.num_rows
    if groups != metadata.num_rows:
        raise ShardError(
            f"not a usable Parquet file: its footer says {metadata.num_rows:,} rows and its row groups {groups:,}"
        )
    return shard


class Groups:
    """The row groups of a file, only the `leaves` asked for, each checked by its footer and by what it holds."""

    def __init__(self, shard: pq.ParquetFile, file, leaves: list[str], max_bytes: int, what: str):
        columns = [shard.schema.column(at) for at in range(len(shard.schema))]
        order = [c.path for c in columns]  # read in file order: the parent's read-ahead windows then serve them
        leaves = sorted(leaves, key=lambda leaf: order.index(leaf) if leaf in order else len(order))
        self.leaves, self.max_bytes, self.what, self.metadata = leaves, max_bytes, what, shard.metadata
        dictionaries = [c.path for c in columns if c.path in leaves and c.physical_type == "BYTE_ARRAY"]
        try:
            self.shard = pq.ParquetFile(file, metadata=self.metadata, read_dictionary=dictionaries)
        except (pa.ArrowException, OSError) as error:
            raise refused(error, "not a Parquet file") from None

    def check_footer(self, group: int) -> None:
        row_group = self.metadata.row_group(group)
        chunks = [row_group.column(i) for i in range(row_group.num_columns)]
        size = sum(
            max(c.total_compressed_size, c.total_uncompressed_size) for c in chunks if c.path_in_schema in self.leaves
        )
        if size > self.max_bytes:
            raise ShardError(
                f"row group {group} holds {size:,} bytes in columns {self.leaves} (by its footer), over "
                f"the limit of {self.max_bytes:,} ({self.what}); write the file with smaller row groups"
            )

    def read(self, group: int) -> pa.Table:
        self.check_footer(group)
        try:
            table = self.shard.read_row_group(group, columns=self.leaves, use_threads=False)
        except MemoryError:
            raise
        except (pa.ArrowException, OSError) as error:
            raise refused(error, f"row group {group} cannot be read") from None
        declared = self.metadata.row_group(group).num_rows
        if table.num_rows != declared:
            raise ShardError(
                f"row group {group}: its footer says {declared:,} rows and its column chunks hold "
                f"{table.num_rows:,}; the file is damaged or was written wrong"
            )
        return table


def refused(error: Exception, what: str) -> Exception:
    """What pyarrow found wrong, as a ShardError; an allocation that failed (pyarrow words it as a Thrift or IO error)
    as the MemoryError it is, so the limit is named."""
    if "bad_alloc" in str(error) or isinstance(error, MemoryError):
        return MemoryError(str(error))
    return ShardError(f"{what}: {str(error).strip()}")
