"""Hostile Parquet files end as one ShardError naming what was wrong, in a process that lives on and stays small."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc

import parquet_bytes
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.untrusted import parquet, parquet_child, parquet_file, sandbox
from runtime.untrusted.samples import Sample, ShardError
from tools.paths import REPO

READ_IN_A_PROCESS = """
import io, json, sys
from runtime.untrusted import parquet
from runtime.errors import CaptionKitError
data = open(sys.argv[1], "rb").read()
try:
    found = list(parquet.iter_samples(io.BytesIO(data), max_member_bytes=1 << 20, max_samples=10_000))
    outcome = {"samples": len(found)}
except CaptionKitError as error:
    outcome = {"error": str(error)}
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would report the parent that forked us
outcome["peak_mib"] = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps(outcome))
"""


def read_in_a_process(data: bytes, tmp_path) -> dict:
    """Read `data` as a shard in a fresh Python process, as the agent would: its exit status, outcome and peak RSS."""
    path = tmp_path / "hostile.parquet"
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", READ_IN_A_PROCESS, str(path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"the reading process died ({done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def write(table: pa.Table, **options) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, **options)
    return out.getvalue()


def test_a_row_group_listing_more_chunks_than_the_schema_has_leaves_is_refused(tmp_path):
    data = parquet_bytes.more_chunks_than_leaves()
    assert len(data) < 128
    outcome = read_in_a_process(data, tmp_path)
    assert outcome["error"] == (
        "not a usable Parquet file: row group 0 lists 2 column chunks and the schema has 1 leaves"
    )


def test_a_schema_nested_30000_deep_kills_only_the_reader_and_fails_the_shard(tmp_path):
    data = parquet_bytes.nested_schema(30_000)
    outcome = read_in_a_process(data, tmp_path)
    assert outcome["error"].startswith("the Parquet reader was ended by "), outcome
    assert "SIGABRT" in outcome["error"] or "SIGSEGV" in outcome["error"], outcome
    assert outcome["peak_mib"] < 200


def test_rows_the_footer_declares_over_an_empty_chunk_fail_the_shard_instead_of_vanishing():
    data = parquet_bytes.rows_over_an_empty_chunk(1000)
    with pytest.raises(ShardError, match="row group 0: its footer says 1,000 rows and its column chunks hold 0"):
        list(parquet.iter_samples(io.BytesIO(data), max_member_bytes=1 << 20, max_samples=10_000))


def test_a_footer_that_parses_past_the_readers_memory_limit_fails_the_shard(tmp_path):
    data = parquet_bytes.many_row_groups(300_000)
    assert len(data) < parquet_file.MAX_FOOTER_BYTES  # within the footer cap: only the memory limit stops it
    small = sandbox.Sandbox(sandbox.Limits(memory_bytes=480 * 1024**2), keep=0)
    with pytest.raises(
        ShardError,
        match=r"the Parquet reader: needs more memory than the decoder's limit of "
        r"503,316,480 bytes|the Parquet reader was ended by",
    ):
        parquet.inspect(io.BytesIO(data), pool=small)
    assert parquet.inspect(io.BytesIO(write(pa.table({"image": [b"x"]}))), pool=small) == ("image", None, 1)


def test_a_footer_of_many_minimal_row_groups_is_parsed_in_the_child_and_the_reading_process_stays_small(tmp_path):
    data = parquet_bytes.many_row_groups(200_000)  # 4 MB that pyarrow parses into about 170 MB
    outcome = read_in_a_process(data, tmp_path)
    assert outcome.get("samples") == 0 or "memory" in outcome.get("error", ""), outcome
    assert outcome["peak_mib"] < 150, outcome  # in-process parsing alone took the reader past 240 MiB


class Collected:
    """The child's channel, in this process: what an operation emits, and reads served from bytes."""

    def __init__(self, data: bytes):
        self.data, self.items = data, []

    def emit(self, header, blobs=()):
        self.items.append((header, [len(b) for b in blobs]))

    def read_at(self, offset, size):
        return self.data[offset : offset + size]


def test_a_dictionary_entry_over_the_image_limit_is_measured_once_never_copied_per_row():
    entry = bytes(8 * 1024 * 1024)  # zeros: the file stays small, the entry is 8 MiB once decoded
    data = write(pa.table({"image": pa.array([entry] * 200, pa.binary())}), use_dictionary=True, compression="zstd")
    assert len(data) < 100_000
    channel = Collected(data)
    args = {"size": len(data), "max_member_bytes": 1 << 20, "max_samples": 1000, "max_row_group_bytes": 1 << 30}
    tracemalloc.start()
    try:
        parquet_child.samples(channel, args, [])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [row["error"] for header, _ in channel.items for row in header["rows"]] == [
        "the image is 8,388,608 bytes, over the limit of 1,048,576 (max_image_bytes)"
    ] * 200
    assert peak < 4 * 1024 * 1024, f"{peak:,} bytes of Python objects at the peak: an entry was copied"


def test_a_repeated_dictionary_image_is_read_per_row_and_keys_looked_up():
    image = os.urandom(50_000)
    keys = [f"k{i % 3}" for i in range(30)]
    data = write(pa.table({"key": keys, "image": pa.array([image] * 30, pa.binary())}), use_dictionary=True)
    got = list(parquet.iter_samples(io.BytesIO(data), max_member_bytes=1 << 20, max_samples=100))
    assert got == [Sample(k, i, image, None) for i, k in enumerate(keys)]


def test_an_s3_failure_while_the_child_reads_stays_itself_and_the_pool_recovers():
    data = write(pa.table({"image": [os.urandom(200) for _ in range(20)]}))

    class Failing(io.BytesIO):
        def read(self, n=-1):
            if self.tell() < len(data) - 4096:  # the footer's reads pass, the row group's read fails
                raise TimeoutError("S3 read timed out")
            return super().read(n)

    with pytest.raises(TimeoutError, match="S3 read timed out"):
        list(parquet.iter_samples(Failing(data), max_member_bytes=1 << 20, max_samples=100))
    assert len(list(parquet.iter_samples(io.BytesIO(data), max_member_bytes=1 << 20, max_samples=100))) == 20


def test_corrupt_page_data_fails_the_shard_whatever_the_mutation():
    import random

    data = write(
        pa.table({"image": [os.urandom(200) + bytes(2000) for _ in range(20)]}),
        compression="snappy",
        use_dictionary=False,
    )
    chunk = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(0)
    rng, outcomes = random.Random(1), {"read": 0, "refused": 0}
    for _ in range(40):
        mutated = bytearray(data)
        for _ in range(3):
            mutated[chunk.data_page_offset + rng.randrange(chunk.total_compressed_size)] = rng.randrange(256)
        try:
            list(parquet.iter_samples(io.BytesIO(bytes(mutated)), max_member_bytes=1 << 20, max_samples=100))
            outcomes["read"] += 1
        except ShardError:  # anything else escapes and fails the test
            outcomes["refused"] += 1
    assert outcomes["refused"] > 5 and outcomes["read"] > 5, outcomes


def test_an_output_file_with_an_oversized_cell_is_refused_by_the_bounded_reader():
    columns = ("key", "caption")
    good = write(pa.table({"key": ["a", "b"], "caption": ["a cat", "a dog"]}))
    assert [r for batch in parquet.iter_rows(io.BytesIO(good), columns=columns) for r in batch] == [
        {"key": "a", "caption": "a cat"},
        {"key": "b", "caption": "a dog"},
    ]
    huge = write(pa.table({"key": ["a"] * 50, "caption": pa.array(["x" * 200_000] * 50)}), use_dictionary=True)
    with pytest.raises(ShardError, match="a 'caption' cell over 65,536 bytes: not a CaptionKit output"):
        list(parquet.iter_rows(io.BytesIO(huge), columns=columns))
    with pytest.raises(ShardError, match=r"columns \['key', 'caption'\], expected \['key', 'error'\]"):
        list(parquet.iter_rows(io.BytesIO(good), columns=("key", "error")))


def test_a_read_to_its_end_gives_its_child_back_and_one_stopped_early_kills_it():
    data = write(pa.table({"image": [b"%d" % i for i in range(10)]}))
    pool = sandbox.Sandbox(keep=2)
    for _ in range(3):
        assert len(list(parquet.iter_samples(io.BytesIO(data), max_member_bytes=100, max_samples=10, pool=pool))) == 10
        assert parquet.inspect(io.BytesIO(data), pool=pool) == ("image", None, 10)
    assert pool.started == 1  # one child served every read: a read costs no process start
    samples = parquet.iter_samples(io.BytesIO(data), max_member_bytes=100, max_samples=10, pool=pool)
    next(samples)
    samples.close()  # abandoned mid-stream: that child's protocol state is unknown, so it is ended
    assert pool._idle == [] and pool.started == 1
    assert parquet.inspect(io.BytesIO(data), pool=pool)[2] == 10 and pool.started == 2


def test_collect_refuses_a_replaced_shard_output_that_would_expand_past_its_bounds(stack, tmp_path):
    from runtime.agent.parts.output import COLUMNS, SCHEMA
    from tools import collect_shards
    from tools.job_folder import JobReader

    row = {name: ("x" if SCHEMA.field(name).type == pa.string() else 0) for name in COLUMNS}
    bloated = write(
        pa.Table.from_pylist([{**row, "caption": "y" * 300_000}] * 2000, schema=SCHEMA),
        use_dictionary=True,
        compression="zstd",
    )
    assert len(bloated) < 100_000  # 600 MB of captions once decoded
    root = "results/_jobs/job-x/"
    stack.put(root + "manifest.json", json.dumps({"job_id": "job-x", "kind": "shards", "shards": [{}]}).encode())
    stack.put(root + "shards/000000.parquet", bloated)
    reader = JobReader.for_job(stack.s3, stack.images, "results/", "job-x")
    found = collect_shards.outputs(reader, reader.read_manifest())
    with pytest.raises(collect_shards.CollectError, match="a 'caption' cell over 65,536 bytes"):
        collect_shards.merge(reader, found, tmp_path / "out.parquet", stream=io.StringIO())
    assert not (tmp_path / "out.parquet").exists()
