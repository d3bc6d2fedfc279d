"""A Parquet shard's columns as the decoding child reads them: which column is the image and which the key (named or
guessed from the schema), which leaves to read for them, and a binary column's cells with each size known before its
bytes are copied.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from runtime.untrusted.samples import ShardError

KEY_GUESSES = ("__key__", "key", "id", "image_id", "file_name", "filename", "path")
IMAGE_GUESSES = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes")
EXPECTED = "binary, large_binary, or a struct with a binary `bytes` field (HF datasets Image())"


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


def leaves_of(schema: pa.Schema, image: str, key: str | None) -> list[str]:
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


def short_values(column, limit: int, what: str) -> list:
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
            values.append(cells.get(row) if size is None or size <= limit else TooLong(size))
    return values


class TooLong:
    def __init__(self, size: int):
        self.size = size
