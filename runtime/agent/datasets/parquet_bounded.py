"""Row groups of an untrusted Parquet file, each read only once what reading it allocates is known and bounded.

Checked before pyarrow allocates anything: the footer's length, then the row counts (the file's against its row
groups'). Checked before a row group is read: its leaves' sizes by the footer, then by the page headers pyarrow will
act on (parquet_pages: the two are written independently), counting each leaf as the larger of the bytes read and
the bytes its pages decode to, plus its rows' offsets and indexes. Byte-array leaves are read as dictionaries, so a
value that a dictionary index repeats on every row is held once; callers look dictionary cells up, never expand them.

Errors are ShardError. A read failure of the file itself (S3 trouble, which pyarrow re-raises unchanged) propagates
as it is, for the caller to classify; what pyarrow finds wrong in the bytes (its corrupt-data OSErrors) is ShardError.
"""
from __future__ import annotations

import io
import struct
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from runtime.agent.datasets import parquet_pages
from runtime.agent.datasets.samples import ShardError

MAX_FOOTER_BYTES = 64 * 1024 * 1024
MAX_DICT_HEADER_PADDING = 100  # parquet-mr before 1.2.9 left the dictionary header out of a chunk's size (PARQUET-816)
ROW_BYTES = 16  # what a decoded row costs a leaf beyond its value bytes: offsets, a dictionary index, validity


def open_footer(file: BinaryIO) -> pq.ParquetFile:
    """The file's footer, its length checked before pyarrow allocates it and its row counts checked after."""
    size = file.seek(0, io.SEEK_END)
    if size < 12:
        raise ShardError(f"not a Parquet file: {size} bytes")
    file.seek(size - 8)
    tail = file.read(8)
    file.seek(0)
    if tail[4:] != b"PAR1":
        raise ShardError("not a Parquet file: no PAR1 magic at its end")
    (footer,) = struct.unpack("<I", tail[:4])
    if footer > min(MAX_FOOTER_BYTES, size - 12):
        raise ShardError(f"not a usable Parquet file: a footer of {footer:,} bytes in a file of {size:,}")
    try:
        shard = pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as error:
        raise unreadable(error, file, "not a Parquet file") from error
    metadata = shard.metadata
    groups = sum(metadata.row_group(group).num_rows for group in range(metadata.num_row_groups))
    if groups != metadata.num_rows:
        raise ShardError(f"not a usable Parquet file: its footer says {metadata.num_rows:,} rows and its row groups "
                         f"{groups:,}")
    return shard


def unreadable(error: Exception, file: BinaryIO, what: str) -> Exception:
    """ShardError for what pyarrow found wrong in the bytes; the file's own read failure (`file.failure`) as it is."""
    if error is getattr(file, "failure", None):
        return error
    return ShardError(f"{what}: {error}")


class GroupReader:
    """The row groups of `shard`, only the `leaves` (column paths), each read after its sizes are checked."""

    def __init__(self, shard: pq.ParquetFile, file: BinaryIO, leaves: list[str], max_bytes: int, what: str):
        self.file, self.leaves, self.max_bytes, self.what = file, leaves, max_bytes, what
        self.metadata, self.size = shard.metadata, file.seek(0, io.SEEK_END)
        columns = [shard.schema.column(at) for at in range(len(shard.schema))]
        dictionaries = [column.path for column in columns
                        if column.path in leaves and column.physical_type == "BYTE_ARRAY"]
        try:
            self.shard = pq.ParquetFile(file, metadata=self.metadata, read_dictionary=dictionaries)
        except (pa.ArrowException, OSError) as error:
            raise unreadable(error, file, "not a Parquet file") from error

    def check_footer(self, group: int) -> None:
        """ShardError where the footer alone shows the group over max_bytes."""
        size = sum(max(chunk.total_compressed_size, chunk.total_uncompressed_size) for chunk in self._chunks(group))
        self._check(size, group, "by its footer")

    def read(self, group: int) -> pa.Table:
        """The group's leaves, after its footer and its page headers show it within max_bytes."""
        self.check_footer(group)
        self._check(self._pages_bytes(group), group, "by its page headers")
        try:
            return self.shard.read_row_group(group, columns=self.leaves, use_threads=False)
        except (pa.ArrowException, OSError) as error:
            raise unreadable(error, self.file, f"row group {group} cannot be read") from error

    def _chunks(self, group: int) -> list[pq.ColumnChunkMetaData]:
        row_group = self.metadata.row_group(group)
        chunks = [row_group.column(index) for index in range(row_group.num_columns)]
        return [chunk for chunk in chunks if chunk.path_in_schema in self.leaves]

    def _pages_bytes(self, group: int) -> int:
        rows = self.metadata.row_group(group).num_rows
        total = 0
        for chunk in self._chunks(group):
            start, end = self._chunk_range(chunk)
            self.file.seek(start)
            pages = parquet_pages.walk(self.file.read(end - start), num_values=chunk.num_values, rows=rows,
                                       byte_array=chunk.physical_type == "BYTE_ARRAY",
                                       where=f"row group {group}, column {chunk.path_in_schema!r}")
            total += max(end - start, parquet_pages.declared_bytes(pages)) + rows * ROW_BYTES
        return total

    def _chunk_range(self, chunk: pq.ColumnChunkMetaData) -> tuple[int, int]:
        """[start, end) of the bytes pyarrow reads for a chunk (parquet/file_reader.cc, ComputeColumnChunkRange).

        The PARQUET-816 padding pyarrow adds for old parquet-mr files is added for any parquet-mr file: a wider range
        only checks more pages than pyarrow reads, never fewer.
        """
        start = chunk.data_page_offset
        if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
            start = chunk.dictionary_page_offset
        end = start + chunk.total_compressed_size
        if start < 0 or chunk.total_compressed_size < 0 or end > self.size:
            raise ShardError(f"column {chunk.path_in_schema!r} lies outside the file (bytes {start:,}-{end:,} of "
                             f"{self.size:,})")
        if "parquet-mr" in (self.metadata.created_by or ""):
            end = min(self.size, end + MAX_DICT_HEADER_PADDING)
        return start, end

    def _check(self, size: int, group: int, by: str) -> None:
        if size > self.max_bytes:
            raise ShardError(f"row group {group} holds {size:,} bytes in columns {self.leaves} ({by}), over the limit "
                             f"of {self.max_bytes:,} ({self.what}); write the file with smaller row groups")


def python_values(column: pa.ChunkedArray, *, as_bytes: bool) -> list:
    """The column's cells as Python values: text as bytes where `as_bytes` (integers stay ints), and a dictionary
    cell as its entry's one Python object, so a repeated entry is never copied per row."""
    values = []
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            entries = _python(chunk.dictionary, as_bytes)
            values.extend(None if index is None else entries[index] for index in chunk.indices.to_pylist())
        else:
            values.extend(_python(chunk, as_bytes))
    return values


def _python(array: pa.Array, as_bytes: bool) -> list:
    if as_bytes and not pa.types.is_integer(array.type):
        array = array.cast(pa.large_binary())
    return array.to_pylist()
