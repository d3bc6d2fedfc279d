"""The Parquet operations a decoding child serves (inspect, samples, column, rows), as plain values for the parent.

Only here does pyarrow see an untrusted file. The child's address-space limit bounds what a footer or a page header
makes pyarrow allocate, its CPU limit how long a row group may take; what remains checked here is what the limits do
not express: the footer's row counts against its row groups' and against what the column chunks actually hold, the
sizes the footer declares per row group, and each cell's size before its bytes are copied (a dictionary entry is
measured once, never expanded per row). The file and its row groups are read by runtime.untrusted.parquet_file, the
columns told apart and their cells measured by runtime.untrusted.parquet_columns.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runtime.untrusted.parquet_columns import Cells, TooLong, leaves_of, resolve, short_values
from runtime.untrusted.parquet_file import Groups, PipeFile, open_footer
from runtime.untrusted.samples import MAX_KEY_BYTES, ShardError

VALUES_BATCH_BYTES = 4 * 1024 * 1024  # one item of `samples`, `column` or `rows` carries about this much
ROWS_PER_ITEM = 256


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


def inspect(channel, args: dict, _blobs):
    """The shard's image and key columns and rows, from its footer alone; a file whose every image cell is null by
    its footer's statistics (image paths saved without their bytes) is refused, saying how to fix it."""
    shard = open_footer(PipeFile(channel, int(args["size"])))
    image, key = resolve(shard.schema_arrow, args.get("image_column"), args.get("key_column"))
    if _every_image_null(shard, leaves_of(shard.schema_arrow, image, None)[0]):
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
        leaves_of(shard.schema_arrow, image, None if struct_path else key),
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
        values = short_values(keys, 4 * MAX_KEY_BYTES, "key") if keys is not None else None
        offset = 0
        for chunk in images.chunks:
            struct = pa.types.is_struct(chunk.type)
            valid = chunk.is_valid().to_pylist()
            cells = Cells(chunk.field("bytes") if struct else chunk)
            paths = (
                short_values(pa.chunked_array([chunk.field("path")]), 200, "path")
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
    if isinstance(value, TooLong):
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
                if path is None or isinstance(path, TooLong)
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
        keys = short_values(table.column(wanted), limit, wanted)
        buckets = short_values(table.column("bucket"), limit, "bucket") if len(columns) > 1 else None
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
    if isinstance(value, TooLong):
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
            values = short_values(table.column(name), limit, name)
            if any(isinstance(v, TooLong) for v in values):
                raise ShardError(f"row group {group}: a {name!r} cell over {limit:,} bytes: not a CaptionKit output")
            columns[name] = [_json_cell(v) for v in values]
        for start in range(0, table.num_rows, 1024):
            batch = [
                {name: columns[name][i] for name in expected} for i in range(start, min(start + 1024, table.num_rows))
            ]
            channel.emit({"rows": len(batch)}, (json.dumps(batch, ensure_ascii=False).encode(),))
    return {"rows": shard.metadata.num_rows}
