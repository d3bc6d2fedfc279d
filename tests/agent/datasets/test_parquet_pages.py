"""Hostile Parquet shards: pages larger than their footer says, dictionary and delta amplification, lying row counts."""
from __future__ import annotations

import io
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.agent.datasets import parquet_pages
from runtime.agent.datasets.parquet import inspect, iter_samples
from runtime.agent.datasets.samples import Sample, ShardError

from tests.agent.datasets.test_parquet import HF_IMAGE, read, write


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def zigzag(value: int) -> bytes:
    return varint(value << 1 if value >= 0 else (-value << 1) - 1)


def padded(value: int, length: int) -> bytes:
    """`value` as a zigzag varint of exactly `length` bytes (a non-canonical encoding Thrift readers accept)."""
    raw = (value << 1) if value >= 0 else (-value << 1) - 1
    out = bytes((raw >> (7 * i)) & 0x7F | 0x80 for i in range(length - 1)) + bytes([raw >> (7 * (length - 1))])
    assert raw >> (7 * length) == 0
    return out


def footer_span(data: bytes) -> tuple[int, int]:
    size = int.from_bytes(data[-8:-4], "little")
    return len(data) - 8 - size, len(data) - 8


def patch_footer(data: bytes, old: bytes, new: bytes) -> bytes:
    start, end = footer_span(data)
    footer = data[start:end]
    assert old in footer and len(old) == len(new)
    return data[:start] + footer.replace(old, new) + data[end:]


def test_a_dictionary_repeating_one_image_per_row_is_held_once_not_once_per_row():
    image = os.urandom(100_000)
    data = write(pa.table({"image": pa.array([image] * 2000, pa.binary())}), use_dictionary=True, compression="zstd")
    assert len(data) < 200_000  # 2000 rows of 100 kB in a file of 100 kB: dense, the group decodes to 200 MB
    samples = iter_samples(io.BytesIO(data), max_member_bytes=1 << 20, max_samples=2000)
    first = next(samples)
    held = pa.total_allocated_bytes()
    assert first == Sample("0", 0, image, None)
    assert held < 5_000_000, f"{held:,} bytes held by Arrow for one row group"
    assert sum(1 for sample in samples if sample.data == image) == 1999


def test_repeated_keys_of_a_dictionary_column_are_looked_up_not_expanded():
    keys = ["k%d" % (i % 3) for i in range(9)]
    data = write(pa.table({"key": keys, "image": [b"%d" % i for i in range(9)]}), use_dictionary=True)
    assert [sample.key for sample in read(data)] == keys
    images = pa.array([{"bytes": b"a", "path": "same.jpg"}] * 4, HF_IMAGE)
    assert read(write(pa.table({"image": images}))) == [Sample("same.jpg", i, b"a", None) for i in range(4)]


def test_a_page_larger_than_the_footer_says_fails_before_it_is_decoded():
    table = pa.table({"image": [bytes(300_000)]})  # zeros: zstd keeps them in a few hundred bytes
    data = write(table, compression="zstd", use_dictionary=False)
    chunk = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(0)
    honest = chunk.total_uncompressed_size
    assert chunk.total_compressed_size < 1000 < 300_000 < honest
    lying = patch_footer(data, zigzag(honest), padded(500, len(zigzag(honest))))
    assert pq.ParquetFile(io.BytesIO(lying)).metadata.row_group(0).column(0).total_uncompressed_size == 500
    assert pq.ParquetFile(io.BytesIO(lying)).read_row_group(0).num_rows == 1  # pyarrow reads it as it stands
    with pytest.raises(ShardError, match=r"row group 0 holds 3\d\d,\d\d\d bytes in columns \['image'\] \(by its page "
                                         r"headers\), over the limit of 100,000"):
        read(lying, max_row_group_bytes=100_000)
    assert read(lying)[0].data == bytes(300_000)  # under the default limit: read


@pytest.mark.parametrize("encoding", ["DELTA_BYTE_ARRAY", "DELTA_LENGTH_BYTE_ARRAY"])
def test_delta_encoded_byte_arrays_are_refused_by_name_and_integer_keys_read_in_any_encoding(encoding):
    images = [b"same prefix " * 50 + b"%d" % i for i in range(20)]
    delta = write(pa.table({"image": images}), use_dictionary=False, column_encoding={"image": encoding})
    with pytest.raises(ShardError, match=f"row group 0, column 'image': a page is {encoding}-encoded; byte-array "
                                         f"columns are read only PLAIN or dictionary encoded"):
        read(delta)
    integers = write(pa.table({"key": list(range(20)), "image": images}), use_dictionary=["image"],
                     column_encoding={"key": "DELTA_BINARY_PACKED"})
    assert [sample.key for sample in read(integers)] == [str(i) for i in range(20)]  # ints: any encoding


def test_a_footer_whose_row_count_disagrees_with_its_row_groups_fails_whole():
    data = write(pa.table({"image": [b"x"] * 300}))
    start, end = footer_span(data)
    cursor = parquet_pages._Compact(memoryview(data), start)
    for field, kind in cursor.fields():  # FileMetaData: field 3 is num_rows
        if field == 3:
            at = cursor.at
            break
        cursor.skip(kind)
    assert data[at:at + 2] == zigzag(300)
    lying = data[:at] + zigzag(301) + data[at + 2:]
    assert pq.ParquetFile(io.BytesIO(lying)).metadata.num_rows == 301
    for call in (lambda: inspect(io.BytesIO(lying)), lambda: read(lying)):
        with pytest.raises(ShardError, match="its footer says 301 rows and its row groups 300"):
            call()


def test_corrupt_page_data_fails_the_shard_and_an_s3_failure_inside_pyarrow_stays_itself():
    data = write(pa.table({"image": [os.urandom(200) + bytes(2000) for _ in range(20)]}), compression="snappy",
                 use_dictionary=False)
    chunk = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(0)
    rng, outcomes = random.Random(1), {}
    for _ in range(200):
        mutated = bytearray(data)
        for _ in range(3):
            mutated[chunk.data_page_offset + rng.randrange(chunk.total_compressed_size)] = rng.randrange(256)
        try:
            read(bytes(mutated))
            outcome = "read"
        except ShardError as error:
            outcome = "snappy" if "Corrupt snappy" in str(error) else "other"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1  # anything but ShardError escapes and fails the test
    assert outcomes.get("snappy", 0) > 20 and outcomes.get("read", 0) > 20, outcomes

    class Failing(io.BytesIO):
        failure = None

        def read(self, n=-1):
            if self.tell() < len(data) - 4096:  # the footer reads pass, the row group's read fails
                self.failure = TimeoutError("S3 read timed out")
                raise self.failure
            return super().read(n)

    with pytest.raises(TimeoutError, match="S3 read timed out"):
        list(iter_samples(Failing(data), max_member_bytes=1 << 20, max_samples=100))


def test_every_mutation_of_a_chunk_either_walks_or_fails_as_a_shard_error():
    data = write(pa.table({"key": [f"k{i}" for i in range(50)], "image": [os.urandom(300) for _ in range(50)]}),
                 data_page_size=2000, write_batch_size=5, compression="snappy", use_dictionary=False)
    chunk = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(1)
    start = min(chunk.data_page_offset, chunk.dictionary_page_offset or chunk.data_page_offset)
    raw = data[start:start + chunk.total_compressed_size]
    pages = parquet_pages.walk(raw, num_values=50, byte_array=True, rows=50, where="w")
    assert len(pages) > 3 and sum(page.values or 0 for page in pages if page.kind != 2) == 50
    rng = random.Random(7)
    outcomes = set()
    for _ in range(3000):
        mutated = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(min(len(raw), 200))] = rng.randrange(256)  # the first pages' headers
        try:
            parquet_pages.walk(bytes(mutated), num_values=50, byte_array=True, rows=50, where="w")
            outcomes.add("walked")
        except ShardError:
            outcomes.add("refused")
    assert outcomes == {"walked", "refused"}


def test_the_walk_refuses_pages_past_the_chunk_and_values_past_the_rows():
    data = write(pa.table({"image": [b"abc"] * 10}), use_dictionary=False, compression="none")
    chunk = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(0)
    raw = data[chunk.data_page_offset:chunk.data_page_offset + chunk.total_compressed_size]
    (page,) = parquet_pages.walk(raw, num_values=10, byte_array=True, rows=10, where="c")
    assert (page.kind, page.values, page.encoding) == (parquet_pages.DATA_PAGE, 10, parquet_pages.PLAIN)
    with pytest.raises(ShardError, match="past the chunk's end"):
        parquet_pages.walk(raw[:-1], num_values=10, byte_array=True, rows=10, where="c")
    with pytest.raises(ShardError, match="a page of 10 values in a row group of 9 rows"):
        parquet_pages.walk(raw, num_values=10, byte_array=True, rows=9, where="c")
    with pytest.raises(ShardError, match="the pages end at byte [\\d,]+ with 10 of its 11 values"):
        parquet_pages.walk(raw, num_values=11, byte_array=True, rows=10, where="c")
    with pytest.raises(ShardError, match="unreadable"):
        parquet_pages.walk(b"\x15", num_values=1, byte_array=True, rows=1, where="c")
    empty = bytes([0x15, 0x00, 0x15, 0x00, 0x15, 0x00, 0x2C, 0x15, 0x00, 0x15, 0x00, 0x00, 0x00])  # a page of 0 values
    pages = parquet_pages.walk(empty * 16 + raw, num_values=10, byte_array=True, rows=10, where="c")
    assert [p.values for p in pages] == [0] * 16 + [10]
    with pytest.raises(ShardError, match="over 26 pages for 10 values"):
        parquet_pages.walk(empty * 1000 + raw, num_values=10, byte_array=True, rows=10, where="c")
