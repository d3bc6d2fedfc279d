"""Parquet files written byte by byte (Thrift compact footers), for the shapes no Parquet writer will produce."""

from __future__ import annotations

BINARY, I32, I64, LIST, STRUCT = 8, 5, 6, 9, 12
BYTE_ARRAY, REQUIRED, OPTIONAL = 6, 0, 1


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def zigzag(value: int) -> bytes:
    return varint(value << 1 if value >= 0 else (-value << 1) - 1)


def struct(*fields: tuple[int, int, object]) -> bytes:
    """A compact-protocol struct of (field id, type, value) in ascending id order."""
    out, last = bytearray(), 0
    for field, kind, value in fields:
        delta = field - last
        out += bytes([delta << 4 | kind]) if 0 < delta <= 15 else bytes([kind]) + zigzag(field)
        out += encode(kind, value)
        last = field
    return bytes(out + b"\x00")


def encode(kind: int, value) -> bytes:
    if kind in (I32, I64):
        return zigzag(value)
    if kind == BINARY:
        raw = value.encode() if isinstance(value, str) else value
        return varint(len(raw)) + raw
    if kind == STRUCT:
        return value  # already encoded
    if kind == LIST:
        element, items = value
        head = bytes([len(items) << 4 | element]) if len(items) < 15 else bytes([0xF0 | element]) + varint(len(items))
        return head + b"".join(encode(element, item) for item in items)
    raise ValueError(kind)


def schema_element(
    name: str, *, children: int | None = None, physical: int | None = None, repetition: int = REQUIRED
) -> bytes:
    fields = []
    if physical is not None:
        fields.append((1, I32, physical))
    fields.append((3, I32, repetition))
    fields.append((4, BINARY, name))
    if children is not None:
        fields.append((5, I32, children))
    return struct(*fields)


def column_chunk(path: list[str], *, offset: int = 4, values: int = 0, size: int = 0) -> bytes:
    meta = struct(
        (1, I32, BYTE_ARRAY),
        (2, LIST, (I32, [0])),
        (3, LIST, (BINARY, path)),
        (4, I32, 0),
        (5, I64, values),
        (6, I64, size),
        (7, I64, size),
        (9, I64, offset),
    )
    return struct((2, I64, offset), (3, STRUCT, meta))


def row_group(chunks: list[bytes], rows: int) -> bytes:
    return struct((1, LIST, (STRUCT, chunks)), (2, I64, 0), (3, I64, rows))


def file(schema: list[bytes], groups: list[bytes], rows: int, body: bytes = b"") -> bytes:
    """PAR1, the body, the footer of this schema and these row groups, its length, PAR1."""
    footer = struct((1, I32, 1), (2, LIST, (STRUCT, schema)), (3, I64, rows), (4, LIST, (STRUCT, groups)))
    return b"PAR1" + body + footer + len(footer).to_bytes(4, "little") + b"PAR1"


def more_chunks_than_leaves() -> bytes:
    """A row group listing two column chunks for a schema of one leaf (pyarrow: "Invalid Column Index", SIGABRT)."""
    schema = [schema_element("schema", children=1), schema_element("image", physical=BYTE_ARRAY)]
    return file(schema, [row_group([column_chunk(["image"]), column_chunk(["image"])], 1)], 1)


def nested_schema(depth: int) -> bytes:
    """A schema of groups nested `depth` deep over one leaf (pyarrow recurses once per level)."""
    schema = [schema_element("schema", children=1)]
    schema += [schema_element(f"g{i}", children=1, repetition=OPTIONAL) for i in range(depth)]
    schema.append(schema_element("image", physical=BYTE_ARRAY, repetition=OPTIONAL))
    return file(schema, [], 0)


def rows_over_an_empty_chunk(rows: int) -> bytes:
    """A footer declaring `rows` rows whose only column chunk holds no values."""
    schema = [schema_element("schema", children=1), schema_element("image", physical=BYTE_ARRAY)]
    return file(schema, [row_group([column_chunk(["image"])], rows)], rows)


def many_row_groups(groups: int) -> bytes:
    """A footer of `groups` minimal row groups, each one empty column chunk: small on disk, large once parsed."""
    schema = [schema_element("schema", children=1), schema_element("image", physical=BYTE_ARRAY)]
    group = row_group([column_chunk(["image"])], 0)
    return file(schema, [group] * groups, 0)
