"""The Parquet reads that run inside a decoding child: footers, row groups and cells, as plain values for the parent.

Only here does pyarrow see an untrusted file. The child's address-space limit bounds what a footer or a page header
makes pyarrow allocate, its CPU limit how long a row group may take; what remains checked here is what the limits do
not express: the footer's row counts against its row groups' and against what the column chunks actually hold, the
sizes the footer declares per row group, and each cell's size before its bytes are copied (a dictionary entry is
measured once, never expanded per row).
"""

from __future__ import annotations

import io
import json
import struct

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runtime.untrusted.samples import MAX_KEY_BYTES, ShardError
from runtime.untrusted.wire import READ_AHEAD

MAX_FOOTER_BYTES = 16 * 1024 * 1024
KEY_GUESSES = ("__key__", "key", "id", "image_id", "file_name", "filename", "path")
IMAGE_GUESSES = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes")
EXPECTED = "binary, large_binary, or a struct with a binary `bytes` field (HF datasets Image())"
VALUES_BATCH_BYTES = 4 * 1024 * 1024  # one item of `samples`, `column` or `rows` carries about this much
ROWS_PER_ITEM = 256


class PipeFile(io.RawIOBase):
    """A seekable read-only file whose bytes come from the parent (`channel.read_at`), a READ_AHEAD window at a time
    (the last two kept), so pyarrow's many small reads cost the parent a few requests, not one each."""

    WINDOWS = 2

    def __init__(self, channel, size: int):
        super().__init__()
        self.channel, self._size, self._pos = channel, size, 0
        self._windows: list[tuple[int, bytes]] = []

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
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        start = self._pos
        end = self._size if n is None or n < 0 else min(self._size, start + n)
        if end <= start:
            return b""
        for at, window in self._windows:
            if at <= start and end <= at + len(window):
                break
        else:
            at = max(0, min(start, self._size - READ_AHEAD)) if end - start < READ_AHEAD else start
            window = self.channel.read_at(at, max(end, min(self._size, at + READ_AHEAD)) - at)
            if len(window) < end - at:
                raise OSError(f"the file ended at {at + len(window):,} bytes, before {end:,}")
            self._windows = [(at, window), *self._windows[: self.WINDOWS - 1]]
        self._pos = end
        return window[start - at : end - at]

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


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
        raise _refused(error, "not a Parquet file") from None
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
            raise _refused(error, "not a Parquet file") from None

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
            raise _refused(error, f"row group {group} cannot be read") from None
        declared = self.metadata.row_group(group).num_rows
        if table.num_rows != declared:
            raise ShardError(
                f"row group {group}: its footer says {declared:,} rows and its column chunks hold "
                f"{table.num_rows:,}; the file is damaged or was written wrong"
            )
        return table


def _refused(error: Exception, what: str) -> Exception:
    """What pyarrow found wrong, as a ShardError; an allocation that failed (pyarrow words it as a Thrift or IO error)
    as the MemoryError it is, so the limit is named."""
    if "bad_alloc" in str(error) or isinstance(error, MemoryError):
        return MemoryError(str(error))
    return ShardError(f"{what}: {str(error).strip()}")


def _is_binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)


def _is_image(kind: pa.DataType) -> bool:
    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and _is_binary(kind.field(index).type)
    return _is_binary(kind)


def _is_key(kind: pa.DataType) -> bool:
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_integer(kind)
        or _is_binary(kind)
    )


def resolve(schema: pa.Schema, image_column: str | None, key_column: str | None) -> tuple[str, str | None]:
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
            raise ShardError(
                f"several columns could be the image ({', '.join(usable[:20])}): name one with image_column"
            )
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
            raise ShardError(
                f"the key column {key_column!r} is {schema.field(key_column).type}; expected strings, integers or bytes"
            )
        return image_column, key_column
    for name in KEY_GUESSES:
        if name in names and name != image_column and _is_key(schema.field(name).type):
            return image_column, name
    if path:
        return image_column, f"{image_column}.path"
    return image_column, None


def _leaves(schema: pa.Schema, image: str, key: str | None) -> list[str]:
    kind = schema.field(image).type
    leaves = [image]
    if pa.types.is_struct(kind):
        leaves = [f"{image}.bytes"]
        if kind.get_field_index("path") >= 0 and _is_key(kind.field("path").type):
            leaves.append(f"{image}.path")
    if key is not None and key not in leaves:
        leaves.append(key)
    return leaves


class Cells:
    """One chunk of a binary (or dictionary-of-binary) column: each cell's size known before its bytes are copied."""

    def __init__(self, chunk: pa.Array):
        self.dictionary = pa.types.is_dictionary(chunk.type)
        if self.dictionary:
            self.entries = chunk.dictionary
            self.indices = chunk.indices.to_pylist()
            entry_sizes = pc.binary_length(self.entries.cast(pa.large_binary())).to_pylist()
            self.sizes = [None if i is None else entry_sizes[i] for i in self.indices]
        else:
            self.entries = chunk.cast(pa.large_binary()) if not pa.types.is_large_binary(chunk.type) else chunk
            self.sizes = pc.binary_length(self.entries).to_pylist()

    def get(self, row: int) -> bytes | None:
        if self.sizes[row] is None:
            return None
        value = self.entries[self.indices[row] if self.dictionary else row].as_py()
        return value.encode("utf-8") if isinstance(value, str) else value


def _text(value, as_bytes: bool):
    if isinstance(value, (bytes, str)):
        return value if as_bytes or isinstance(value, str) else value.decode("utf-8", "replace")
    return value


def _key(value, index: int) -> tuple[str, str | None]:
    if value is None:
        return f"row-{index}", None
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, str):
        value = value.encode("utf-8")
    try:
        key = value.decode("utf-8")
    except UnicodeDecodeError:
        return value[:MAX_KEY_BYTES].decode("utf-8", "backslashreplace"), f"key is not valid UTF-8: {value[:64]!r}"
    if len(value) > MAX_KEY_BYTES:
        return key[:MAX_KEY_BYTES], f"key of {len(value):,} bytes, over the limit of {MAX_KEY_BYTES:,}"
    return key, None


def _short_values(column, limit: int, what: str) -> list:
    """A key-like column's cells as Python values (bytes for text, ints as ints), each at most `limit` bytes."""
    values = []
    for chunk in column.chunks:
        if pa.types.is_integer(chunk.type) or (
            pa.types.is_dictionary(chunk.type) and pa.types.is_integer(chunk.type.value_type)
        ):
            values.extend(
                chunk.to_pylist() if not pa.types.is_dictionary(chunk.type) else chunk.dictionary_decode().to_pylist()
            )
            continue
        cells = Cells(chunk)
        for row in range(len(cells.sizes)):
            size = cells.sizes[row]
            values.append(cells.get(row) if size is None or size <= limit else _TooLong(size))
    return values


class _TooLong:
    def __init__(self, size: int):
        self.size = size


def inspect(channel, args: dict, _blobs):
    """The shard's image and key columns and rows, from its footer alone; a file whose every image cell is null by
    its footer's statistics (image paths saved without their bytes) is refused, saying how to fix it."""
    shard = open_footer(PipeFile(channel, int(args["size"])))
    image, key = resolve(shard.schema_arrow, args.get("image_column"), args.get("key_column"))
    if _every_image_null(shard, _leaves(shard.schema_arrow, image, None)[0]):
        raise ShardError(
            f"every cell of the image column {image!r} is null: the file holds image paths, not image "
            f"bytes (a Hugging Face dataset written from files by path). Write the bytes into the file "
            f"(datasets embeds them in push_to_hub, or cast the column to Image() and save with "
            f"embed_external_files), or submit the images themselves with PREFIX= or MANIFEST="
        )
    return {"image": image, "key": key, "rows": shard.metadata.num_rows}


def _every_image_null(shard: pq.ParquetFile, leaf: str) -> bool:
    """True when the footer's statistics show no non-null value in `leaf` (no statistics: not known, False)."""
    metadata = shard.metadata
    if metadata.num_rows == 0:
        return False
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for at in range(row_group.num_columns):
            chunk = row_group.column(at)
            if chunk.path_in_schema != leaf:
                continue
            stats = chunk.statistics
            if stats is None or not stats.has_null_count or stats.null_count < row_group.num_rows:
                return False
    return True


def samples(channel, args: dict, _blobs):
    """Each row of a shard as one item {key, index, error} with its image bytes as the blob (none on an error)."""
    file = PipeFile(channel, int(args["size"]))
    max_member, max_samples = int(args["max_member_bytes"]), int(args["max_samples"])
    shard = open_footer(file)
    image, key = resolve(shard.schema_arrow, args.get("image_column"), args.get("key_column"))
    metadata = shard.metadata
    if metadata.num_rows > max_samples:
        raise ShardError(
            f"the shard has {metadata.num_rows:,} rows, over the limit of {max_samples:,} (max_shard_samples)"
        )
    struct_path = key is not None and key not in shard.schema_arrow.names
    reader = Groups(
        shard,
        file,
        _leaves(shard.schema_arrow, image, None if struct_path else key),
        int(args["max_row_group_bytes"]),
        "max_row_group_bytes",
    )
    for group in range(metadata.num_row_groups):
        reader.check_footer(group)
    index, batch = 0, _Batch(channel)
    for group in range(metadata.num_row_groups):
        table = reader.read(group)
        images = table.column(image)
        keys = pc.struct_field(images, "path") if struct_path else table.column(key) if key is not None else None
        values = _short_values(keys, 4 * MAX_KEY_BYTES, "key") if keys is not None else None
        offset = 0
        for chunk in images.chunks:
            struct = pa.types.is_struct(chunk.type)
            valid = chunk.is_valid().to_pylist()
            cells = Cells(chunk.field("bytes") if struct else chunk)
            paths = (
                _short_values(pa.chunked_array([chunk.field("path")]), 200, "path")
                if struct and chunk.type.get_field_index("path") >= 0
                else None
            )
            for row in range(len(chunk)):
                value = values[offset + row] if values is not None else index
                _emit_sample(batch, index, value, valid[row], cells, row, paths, struct, max_member)
                index += 1
            offset += len(chunk)
        batch.flush()  # a row group's rows reach the parent before the next group is read
    if index != metadata.num_rows:
        raise ShardError(f"the footer says {metadata.num_rows:,} rows and the row groups held {index:,}")
    return {"rows": index}


class _Batch:
    """Rows sent to the parent a batch at a time (ROWS_PER_ITEM or VALUES_BATCH_BYTES): one wake-up of the parent
    per batch, not per row."""

    def __init__(self, channel):
        self.channel, self.rows, self.blobs, self.size = channel, [], [], 0

    def add(self, row: dict, blob: bytes | None = None) -> None:
        if blob is not None:
            row["blob"] = len(self.blobs)
            self.blobs.append(blob)
            self.size += len(blob)
        self.rows.append(row)
        if len(self.rows) >= ROWS_PER_ITEM or self.size >= VALUES_BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.channel.emit({"rows": self.rows}, self.blobs)
            self.rows, self.blobs, self.size = [], [], 0


def _emit_sample(batch: _Batch, index, value, valid, cells, row, paths, struct, max_member) -> None:
    if isinstance(value, _TooLong):
        batch.add(
            {
                "key": f"row-{index}",
                "index": index,
                "error": f"key of {value.size:,} bytes, over the limit of {MAX_KEY_BYTES:,}",
            }
        )
        return
    key, error = _key(value, index)
    if error is None and not valid:
        error = "the image cell is null"
    size = cells.sizes[row] if error is None else None
    if error is None and size is None:
        if struct:
            path = paths[row] if paths is not None else None
            shown = (
                None
                if path is None or isinstance(path, _TooLong)
                else (str(path) if isinstance(path, int) else path[:200].decode("utf-8", "backslashreplace"))
            )
            error = "the image struct has no bytes" + (f" (path {shown!r})" if shown else "")
        else:
            error = "the image cell is null"
    if error is None and size > max_member:
        error = f"the image is {size:,} bytes, over the limit of {max_member:,} (max_image_bytes)"
    if error is not None:
        batch.add({"key": key, "index": index, "error": error})
    else:
        batch.add({"key": key, "index": index}, cells.get(row))


def column(channel, args: dict, _blobs):
    """The values of one or two text columns (a manifest's key, and its bucket), in batches of JSON arrays."""
    file = PipeFile(channel, int(args["size"]))
    shard = open_footer(file)
    names = shard.schema_arrow.names
    wanted = args.get("key_column") or next((n for n in args["guesses"] if n in names), None)
    if wanted not in names:
        raise ShardError(
            f"no key column {wanted or ' or '.join(args['guesses'])} (columns: {names[:20]}); name it with key_column"
        )
    columns = [wanted] + (["bucket"] if args.get("bucket_column") and "bucket" in names and wanted == "key" else [])
    limit = int(args["max_value_bytes"])
    reader = Groups(shard, file, columns, int(args["max_row_group_bytes"]), "a manifest's row group")
    for group in range(shard.metadata.num_row_groups):
        table = reader.read(group)
        keys = _short_values(table.column(wanted), limit, wanted)
        buckets = _short_values(table.column("bucket"), limit, "bucket") if len(columns) > 1 else None
        batch, size = [], 0
        for n, value in enumerate(keys):
            bucket = buckets[n] if buckets is not None else None
            batch.append([_json_cell(value), _json_cell(bucket)])
            size += 64 + (len(value) if isinstance(value, bytes) else 0)
            if size >= VALUES_BATCH_BYTES:
                channel.emit({"column": wanted}, (json.dumps(batch).encode(),))
                batch, size = [], 0
        if batch:
            channel.emit({"column": wanted}, (json.dumps(batch).encode(),))
    return {"column": wanted}


def _json_cell(value):
    """A cell as JSON: text as a string (None when it is not UTF-8 or too long), ints as ints."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"not_text": True}
    if isinstance(value, _TooLong):
        return {"too_long": value.size}
    return value


def rows(channel, args: dict, _blobs):
    """An output file's rows as JSON objects in batches, once its columns are the expected ones and no cell is over
    `max_cell_bytes` (an output written by an agent holds short text only)."""
    file = PipeFile(channel, int(args["size"]))
    shard = open_footer(file)
    expected = list(args["columns"])
    if shard.schema_arrow.names != expected:
        raise ShardError(f"columns {shard.schema_arrow.names[:20]}, expected {expected}: not a CaptionKit output")
    limit = int(args["max_cell_bytes"])
    reader = Groups(shard, file, expected, int(args["max_row_group_bytes"]), "an output's row group")
    for group in range(shard.metadata.num_row_groups):
        table = reader.read(group)
        columns = {}
        for name in expected:
            values = _short_values(table.column(name), limit, name)
            if any(isinstance(v, _TooLong) for v in values):
                raise ShardError(f"row group {group}: a {name!r} cell over {limit:,} bytes: not a CaptionKit output")
            columns[name] = [_json_cell(v) for v in values]
        for start in range(0, table.num_rows, 1024):
            batch = [
                {name: columns[name][i] for name in expected} for i in range(start, min(start + 1024, table.num_rows))
            ]
            channel.emit({"rows": len(batch)}, (json.dumps(batch, ensure_ascii=False).encode(),))
    return {"rows": shard.metadata.num_rows}
