"""The output file of a shard: render and read round-trip exactly, with the contract's columns and types."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.agent.parts import output
from runtime.agent.parts.output import COLUMNS, SCHEMA, Row, read, render
from runtime.untrusted.samples import ShardError


def row(index: int, caption: str | None = "a cat", error: str | None = None, **fields) -> Row:
    values = dict(
        key=f"k{index:03d}",
        uri=f"s3://b/s.tar#k{index:03d}",
        shard="s3://b/s.tar",
        index=index,
        image_sha256="ab" * 32 if error is None else None,
        caption=caption,
        error=error,
        model="blip",
        model_sha256="cd" * 32,
        settings="0123456789abcdef",
        prompt_sha256=None,
    )
    values.update(fields)
    return Row(**values)


def test_columns_are_the_contracts_in_order_with_their_types():
    assert COLUMNS == (
        "key",
        "uri",
        "shard",
        "index",
        "image_sha256",
        "caption",
        "error",
        "model",
        "model_sha256",
        "settings",
        "prompt_sha256",
    )
    types = {field.name: field.type for field in SCHEMA}
    assert types["index"] == pa.int64()
    assert all(types[name] == pa.string() for name in COLUMNS if name != "index")
    assert [f.name for f in SCHEMA if not f.nullable] == [
        "key",
        "uri",
        "shard",
        "index",
        "model",
        "model_sha256",
        "settings",
    ]


def test_render_then_read_round_trips_rows_exactly():
    rows = [
        row(0),
        row(1, caption=None, error="no image in sample (members: .txt)"),
        row(2, caption="", prompt_sha256="ef" * 32),
        row(3, caption="ünïcødé ✓"),
    ]
    table = read(render(rows))
    assert table.schema.equals(SCHEMA)
    assert table.to_pylist() == [vars(r) for r in rows]


def test_render_is_zstd_parquet_in_memory():
    data = render([row(i) for i in range(5)])
    assert data[:4] == b"PAR1" and data[-4:] == b"PAR1"
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert meta.num_rows == 5
    assert {meta.row_group(0).column(i).compression for i in range(len(COLUMNS))} == {"ZSTD"}


def test_an_empty_shard_renders_a_readable_file_of_zero_rows():
    table = read(render([]))
    assert table.num_rows == 0 and table.schema.equals(SCHEMA)


@pytest.mark.parametrize("caption, error", [("a cat", "broken"), (None, None)])
def test_a_row_needs_exactly_one_of_caption_and_error(caption, error):
    with pytest.raises(ValueError, match="exactly one of caption and error"):
        render([row(0), row(1, caption=caption, error=error)])


def test_read_accepts_a_path_and_a_file(tmp_path):
    data = render([row(0)])
    path = tmp_path / "0.parquet"
    path.write_bytes(data)
    assert read(path).num_rows == 1 and read(str(path)).num_rows == 1
    assert read(io.BytesIO(data)).num_rows == 1


def test_read_refuses_what_is_not_an_output_file():
    with pytest.raises(ShardError, match="not a Parquet output file"):
        read(b"not parquet at all")
    other = io.BytesIO()
    pq.write_table(pa.table({"key": ["a"], "caption": ["b"]}), other)
    with pytest.raises(ShardError, match="columns \\['key', 'caption'\\], expected"):
        read(other.getvalue())


def test_content_type_is_parquets():
    assert output.CONTENT_TYPE == "application/vnd.apache.parquet"
