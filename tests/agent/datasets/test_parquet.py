"""Parquet shards: real files from pyarrow in the layouts datasets use, footers checked first, ranged reads on moto."""

from __future__ import annotations

import io
import os
import uuid

import botocore.exceptions
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime import aws as runtime_aws
from runtime.untrusted import parquet
from runtime.untrusted.parquet import RangedFile, inspect, iter_samples
from runtime.untrusted.samples import Sample, ShardError

HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write(table: pa.Table, **options) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, **options)
    return out.getvalue()


def read(data: bytes, max_member_bytes=1 << 20, max_samples=1000, **options) -> list[Sample]:
    return list(iter_samples(io.BytesIO(data), max_member_bytes=max_member_bytes, max_samples=max_samples, **options))


def test_a_binary_image_column_with_a_string_key_column():
    data = write(pa.table({"key": ["a", "b"], "jpg": [b"A", b"B"], "caption": ["x", "y"]}))
    assert inspect(io.BytesIO(data)) == ("jpg", "key", 2)
    assert read(data) == [Sample("a", 0, b"A", None), Sample("b", 1, b"B", None)]


def test_an_hf_datasets_image_struct_keyed_by_its_path():
    images = pa.array([{"bytes": b"one", "path": "000001.jpg"}, {"bytes": b"two", "path": "000002.jpg"}], HF_IMAGE)
    data = write(pa.table({"image": images, "text": ["a", "b"]}))
    assert inspect(io.BytesIO(data)) == ("image", "image.path", 2)
    assert read(data) == [Sample("000001.jpg", 0, b"one", None), Sample("000002.jpg", 1, b"two", None)]
    assert read(data, key_column="image.path") == read(data)


def test_an_int_key_column_becomes_text():
    data = write(pa.table({"id": pa.array([7, 8], pa.int64()), "image": pa.array([b"a", b"b"], pa.large_binary())}))
    assert read(data) == [Sample("7", 0, b"a", None), Sample("8", 1, b"b", None)]


def test_without_a_key_column_the_row_number_is_the_key():
    data = write(pa.table({"image": [b"a", b"b", b"c"], "score": [1.0, 2.0, 3.0]}))
    assert inspect(io.BytesIO(data)) == ("image", None, 3)
    assert [s.key for s in read(data)] == ["0", "1", "2"]


def test_the_key_guess_follows_the_contracts_order():
    table = pa.table({"path": ["p"], "file_name": ["f"], "id": ["i"], "image": [b"x"]})
    assert inspect(io.BytesIO(write(table)))[1] == "id"
    assert inspect(io.BytesIO(write(table.append_column("__key__", pa.array(["k"])))))[1] == "__key__"


def test_a_named_key_column_must_exist_and_be_usable():
    data = write(pa.table({"image": [b"x"], "uid": ["u"], "score": [0.5]}))
    assert read(data, key_column="uid") == [Sample("u", 0, b"x", None)]
    with pytest.raises(ShardError, match=r"no key column 'nope' in the shard \(columns: image, uid, score\)"):
        inspect(io.BytesIO(data), key_column="nope")
    with pytest.raises(ShardError, match="key column 'score' is double; expected"):
        read(data, key_column="score")
    with pytest.raises(ShardError, match="no key column 'image.path'"):
        inspect(io.BytesIO(data), key_column="image.path")  # a plain binary column has no path


def test_a_null_image_cell_a_struct_without_bytes_and_a_null_key_are_error_rows():
    images = pa.array(
        [{"bytes": b"a", "path": "a.jpg"}, None, {"bytes": None, "path": "c.jpg"}, {"bytes": b"d"}], HF_IMAGE
    )
    data = write(pa.table({"key": ["a", "b", "c", None], "image": images}))
    assert read(data) == [
        Sample("a", 0, b"a", None),
        Sample("b", 1, None, "the image cell is null"),
        Sample("c", 2, None, "the image struct has no bytes (path 'c.jpg')"),
        Sample("row-3", 3, b"d", None),
    ]


def test_an_image_over_the_limit_is_an_error_row():
    data = write(pa.table({"image": [b"x" * 100, b"ok"]}))
    assert read(data, max_member_bytes=50) == [
        Sample("0", 0, None, "the image is 100 bytes, over the limit of 50 (max_image_bytes)"),
        Sample("1", 1, b"ok"),
    ]


def test_keys_that_are_not_utf8_or_too_long_are_error_rows():
    data = write(pa.table({"key": pa.array([b"\xffab", b"k" * 1500, b"fine"]), "image": [b"a", b"b", b"c"]}))
    assert read(data) == [
        Sample("\\xffab", 0, None, "key is not valid UTF-8: b'\\xffab'"),
        Sample("k" * 1024, 1, None, "key of 1,500 bytes, over the limit of 1,024"),
        Sample("fine", 2, b"c", None),
    ]


@pytest.mark.parametrize(
    "column, found",
    [
        (pa.array(["a.jpg"]), "string"),
        (pa.array([[1, 2]]), "list<element: int64>"),
        (pa.array([{"path": "x"}]), "struct<path: string>"),
        (pa.array([{"bytes": "not binary"}]), "struct<bytes: string>"),
    ],
)
def test_a_wrong_typed_image_column_names_the_type_found_and_the_type_expected(column, found):
    data = write(pa.table({"image": column}))
    with pytest.raises(
        ShardError,
        match=f"image column 'image' is {found}; expected binary, large_binary, or a "
        f"struct with a binary `bytes` field",
    ):
        inspect(io.BytesIO(data), image_column="image")
    with pytest.raises(ShardError, match="no image column in the shard: none of its columns \\(image\\) is binary"):
        read(data)


def test_a_named_image_column_must_exist_and_several_candidates_need_a_name():
    data = write(pa.table({"a": [b"1"], "b": [b"2"]}))
    with pytest.raises(ShardError, match=r"no image column 'image' in the shard \(columns: a, b\)"):
        inspect(io.BytesIO(data), image_column="image")
    with pytest.raises(ShardError, match=r"several columns could be the image \(a, b\): name one with image_column"):
        inspect(io.BytesIO(data))
    assert read(data, image_column="b") == [Sample("0", 0, b"2", None)]
    assert inspect(io.BytesIO(write(pa.table({"mask": [b"1"], "jpg": [b"2"]})))) == ("jpg", None, 1)


def test_several_row_groups_are_read_in_order_with_one_index():
    data = write(
        pa.table({"key": [f"k{i}" for i in range(25)], "image": [b"%d" % i for i in range(25)]}), row_group_size=4
    )
    assert pq.ParquetFile(io.BytesIO(data)).metadata.num_row_groups == 7
    assert read(data) == [Sample(f"k{i}", i, b"%d" % i, None) for i in range(25)]


def test_more_rows_than_the_limit_fail_before_any_sample():
    data = write(pa.table({"image": [b"a"] * 5}))
    assert len(read(data, max_samples=5)) == 5
    with pytest.raises(ShardError, match="5 rows, over the limit of 4 \\(max_shard_samples\\)"):
        next(iter_samples(io.BytesIO(data), max_member_bytes=10, max_samples=4))


def test_a_row_group_over_the_limit_fails_before_any_sample_counting_only_the_columns_read():
    table = pa.table({"image": [os.urandom(1000) for _ in range(8)], "other": [os.urandom(5000) for _ in range(8)]})
    data = write(table, row_group_size=4, compression="none")
    assert len(read(data, max_row_group_bytes=10_000)) == 8  # "other" (20 kB a group) is never read: not counted
    with pytest.raises(
        ShardError,
        match=r"row group 0 holds [\d,]+ bytes in columns \['image'\] \(by its footer\), "
        r"over the limit of 3,000 \(max_row_group_bytes\)",
    ):
        next(iter_samples(io.BytesIO(data), max_member_bytes=10_000, max_samples=10, max_row_group_bytes=3000))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"PAR1",
        os.urandom(5000),
        b"PAR1" + os.urandom(100) + b"PAR1",
        b"PAR1" + bytes(100) + b"\xff\xff\xff\x7fPAR1",
    ],
)
def test_what_is_not_parquet_fails_whole(data):
    with pytest.raises(ShardError, match="Parquet file"):
        read(data)


def test_a_file_cut_short_fails_whole():
    data = write(pa.table({"image": [b"a" * 1000] * 10}))
    with pytest.raises(ShardError):
        read(data[:-100])
    with pytest.raises(ShardError):
        read(data[:50] + data[-2000:])


# ---- RangedFile on S3 (moto) -------------------------------------------------------------------------------------


class Counting:
    """An S3 client that counts GETs and keeps their Range headers."""

    def __init__(self, s3):
        self.s3, self.ranges = s3, []

    def get_object(self, **kwargs):
        self.ranges.append(kwargs.get("Range"))
        return self.s3.get_object(**kwargs)


@pytest.fixture
def bucket(aws):
    """A fresh bucket on the session's moto server."""
    s3 = runtime_aws.client("s3")
    name = f"shards-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return s3, name


def put(s3, bucket: str, key: str, data: bytes) -> str:
    return s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]


def test_a_ten_row_group_shard_on_s3_costs_a_handful_of_gets(bucket):
    s3, name = bucket
    rows = 200
    table = pa.table(
        {
            "key": [f"{i:06d}" for i in range(rows)],
            "image": [os.urandom(10_000) for _ in range(rows)],
            "caption": ["c" * 50] * rows,
        }
    )
    data = write(table, row_group_size=20, compression="none")
    assert pq.ParquetFile(io.BytesIO(data)).metadata.num_row_groups == 10 and len(data) > 2 * 1000 * 1000
    etag = put(s3, name, "shard.parquet", data)
    counting = Counting(s3)
    file = RangedFile(counting, name, "shard.parquet", len(data), etag=etag)
    got = list(iter_samples(file, max_member_bytes=1 << 20, max_samples=rows))
    assert got == [Sample(f"{i:06d}", i, table["image"][i].as_py(), None) for i in range(rows)]
    # the footer's 1 MiB window, then the 2 MB of the two columns read in file order, a window at a time (2 or 3
    # GETs), where pyarrow made 22 reads (the footer's 2, then 10 row groups x 2 columns)
    assert parquet.READ_AHEAD == 1024 * 1024
    assert len(counting.ranges) == file.requests <= 3
    assert all(r.startswith("bytes=") for r in counting.ranges)


def test_a_chunk_over_a_window_is_one_get_for_its_page_check_and_pyarrow_together(bucket):
    s3, name = bucket
    table = pa.table({"image": [os.urandom(300_000) for _ in range(10)]})
    data = write(table, compression="none")
    chunk = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(0)
    assert chunk.total_compressed_size > 2 * parquet.READ_AHEAD
    etag = put(s3, name, "big.parquet", data)
    counting = Counting(s3)
    file = RangedFile(counting, name, "big.parquet", len(data), etag=etag)
    assert [sample.data for sample in iter_samples(file, max_member_bytes=1 << 20, max_samples=10)] == table[
        "image"
    ].to_pylist()
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    assert counting.ranges[1:] == [f"bytes={start}-{start + chunk.total_compressed_size - 1}"]  # after the footer's


def test_ranged_file_reads_seeks_and_buffers_like_a_file(bucket):
    s3, name = bucket
    data = os.urandom(3 * 1024 + 17)
    put(s3, name, "blob", data)
    counting = Counting(s3)
    file = RangedFile(counting, name, "blob", len(data), read_ahead=1024)
    assert file.readable() and file.seekable() and file.size() == len(data)
    assert file.read(10) == data[:10] and file.tell() == 10
    assert file.read(100) == data[10:110] and len(counting.ranges) == 1  # inside the read-ahead buffer
    assert counting.ranges == ["bytes=0-1023"]
    assert file.seek(-20, io.SEEK_END) == len(data) - 20 and file.read(50) == data[-20:]
    assert file.read(5) == b"" and counting.ranges[-1] == f"bytes={len(data) - 1024}-{len(data) - 1}"  # moved back
    file.seek(len(data) - 1000)
    assert file.read(900) == data[-1000:-100] and file.seek(20) == 20 and file.read(30) == data[20:50]
    assert len(counting.ranges) == 2  # both windows kept
    file.seek(100)
    assert file.read(2048) == data[100:2148] and counting.ranges[-1] == "bytes=100-2147"  # larger: a GET of its own
    file.seek(200)
    assert file.read(1500) == data[200:1700] and len(counting.ranges) == 3  # and kept as a window
    file.seek(500, io.SEEK_SET)
    file.seek(10, io.SEEK_CUR)
    assert file.read() == data[510:]
    with pytest.raises(ValueError):
        file.seek(-1)
    file.close()
    with pytest.raises(ValueError):
        file.read(1)


def test_ranged_file_pins_the_etag_so_a_replaced_shard_is_never_read(bucket):
    s3, name = bucket
    etag = put(s3, name, "blob", b"first version")
    put(s3, name, "blob", b"second version")
    file = RangedFile(s3, name, "blob", 13, etag=etag)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        file.read(4)
    assert runtime_aws.error_code(raised.value) in ("PreconditionFailed", "412")


def test_ranged_file_refuses_an_object_shorter_than_its_listed_size(bucket):
    s3, name = bucket
    put(s3, name, "blob", b"short")
    file = RangedFile(s3, name, "blob", 5000, read_ahead=4096)
    with pytest.raises((ShardError, botocore.exceptions.ClientError)):
        file.read(100)
