"""A dataset job's captions: its `shards/<index>.parquet` files merged in index order into one Parquet or JSON Lines
file in one streaming pass, or (`--list`) their URIs for tools that read the shards directly.

Memory stays flat as the job grows: one output file at a time is held (refused over `max_file_bytes` before it is
read), and it is copied a row group at a time. The job folder is written only by agents, so its files are trusted
as captions; each is still checked to have the output schema (runtime.agent.datasets.output) before a row is copied.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from runtime.agent.datasets.output import COLUMNS, COMPRESSION, SCHEMA
from runtime.agent.layout import JOB_SHARDS, JOB_SUMMARY, chunk_marker, shard_output
from runtime.errors import CaptionKitError
from tools.job_progress import JobReader
from tools.progress import Bar
from tools.shard_progress import ShardJobReader

MAX_FILE_BYTES = 2 * 1024 ** 3  # one shard's captions; the largest allowed shard makes a few hundred MiB of them


class CollectError(CaptionKitError, ValueError):
    """An output file that cannot be collected (too large, not the output schema): nothing more is written."""


@dataclasses.dataclass
class Outputs:
    """A dataset job's output files now: (index, key, size) present in index order, the indexes missing one, and
    whether the job's newest run is complete (its summary written) and which missing shards it says failed."""

    present: list[tuple[int, str, int]]
    missing: list[int]
    failed: list[int]
    complete: bool

    @property
    def still_running(self) -> list[int]:
        return [i for i in self.missing if i not in set(self.failed)]


def outputs(reader: JobReader, manifest: dict) -> Outputs:
    """List the job's shards/ folder against its manifest; read the markers of the missing shards only."""
    root, s3, bucket = reader.root, reader.s3, reader.bucket
    listed = {o["Key"]: o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=root + JOB_SHARDS) for o in page.get("Contents", [])}
    present, missing = [], []
    for index in range(len(manifest["shards"])):
        key = shard_output(root, index)
        if key in listed:
            present.append((index, key, listed[key]))
        else:
            missing.append(index)
    shards = ShardJobReader(reader)
    failed = [i for i in missing if (shards.optional_json(chunk_marker(root, i)) or {}).get("status") == "failed"]
    summary, run = shards.summary(), shards.latest_run()
    return Outputs(present, missing, failed, summary is not None and summary.get("run") == run)


def _table_of(data: bytes, uri: str) -> pq.ParquetFile:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise CollectError(f"{uri}: not a Parquet file ({exc}); nothing after it was collected") from None
    if tuple(parquet.schema_arrow.names) != COLUMNS:
        raise CollectError(f"{uri}: columns {parquet.schema_arrow.names}, expected {list(COLUMNS)}: not a "
                           "CaptionKit shard output; nothing after it was collected")
    return parquet


def _download(s3, bucket: str, key: str, size: int, max_file_bytes: int) -> bytes:
    uri = f"s3://{bucket}/{key}"
    if size > max_file_bytes:
        raise CollectError(f"{uri} is {size:,} bytes, over the {max_file_bytes:,} collect holds at once; read it "
                           "directly (make collect LIST=1 prints the shard files)")
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read(max_file_bytes + 1)
    if len(data) > max_file_bytes:
        raise CollectError(f"{uri} grew past {max_file_bytes:,} bytes while collect read it")
    return data


class _Jsonl:
    def __init__(self, out: Path) -> None:
        self.file = open(out, "w", encoding="utf-8")

    def write(self, table: pa.Table) -> None:
        for batch in table.to_batches(max_chunksize=1024):
            self.file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in batch.to_pylist())

    def close(self) -> None:
        self.file.close()


class _Parquet:
    def __init__(self, out: Path) -> None:
        self.writer = pq.ParquetWriter(out, SCHEMA, compression=COMPRESSION)

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)

    def close(self) -> None:
        self.writer.close()


WRITERS = {"jsonl": _Jsonl, "parquet": _Parquet}


def merge(reader: JobReader, found: Outputs, out: Path, fmt: str, *, max_file_bytes: int = MAX_FILE_BYTES,
          stream=None) -> dict:
    """Copy every present output file, in index order and a row group at a time, into `out` (`fmt`)."""
    if fmt not in WRITERS:
        raise CollectError(f"a dataset job collects into {' or '.join(sorted(WRITERS))}, not {fmt!r}")
    writer = WRITERS[fmt](out)
    bar, rows, captions, errors = Bar(f"collect job {reader.job_id}", total=len(found.present), stream=stream,
                                      every_s=2.0), 0, 0, 0
    try:
        for done, (_index, key, size) in enumerate(found.present, 1):
            data = _download(reader.s3, reader.bucket, key, size, max_file_bytes)
            parquet = _table_of(data, f"s3://{reader.bucket}/{key}")
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group).cast(SCHEMA)
                writer.write(table)
                rows += table.num_rows
                errors += table.num_rows - table.column("error").null_count
            del data, parquet
            bar.update(done)
        captions = rows - errors
    finally:
        writer.close()
        bar.close()
    return {"rows": rows, "captions": captions, "errors": errors, "shards": len(found.present), "out": str(out)}


def report_missing(job_id: str, found: Outputs, stream=None) -> int:
    """Say on `stream` (stderr) which shards have no output; the exit code: 1 while some are still to come,
    0 when the job is complete and the missing ones failed (a warning: make retry requeues them)."""
    stream = stream or sys.stderr
    if not found.missing:
        return 0
    shown = lambda ids: ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")  # noqa: E731
    if found.still_running or not found.complete:
        stream.write(f"collect: {len(found.missing)} of the job's shards have no output yet (indexes "
                     f"{shown(found.missing)}): the job is not complete; make status JOB={job_id}, then collect "
                     "again\n")
        return 1
    stream.write(f"collect: warning: {len(found.failed)} shard(s) failed and have no output (indexes "
                 f"{shown(found.failed)}); their samples are not in the file: make retry JOB={job_id} ONLY=failed\n")
    return 0


def main(reader: JobReader, manifest: dict, out: Path | None, fmt: str | None, *, list_only: bool,
         max_file_bytes: int = MAX_FILE_BYTES) -> int:
    """`tools.collect --job ID` for a dataset job (its manifest has a "kind")."""
    found = outputs(reader, manifest)
    if list_only:
        for _index, key, _size in found.present:
            print(f"s3://{reader.bucket}/{key}")
    else:
        if out is None:
            raise SystemExit("collect: give OUT (a .parquet or .jsonl file), or LIST=1 for the shard files")
        try:
            print(json.dumps({**merge(reader, found, out, fmt or "jsonl", max_file_bytes=max_file_bytes),
                              "missing": found.missing, "summary": f"s3://{reader.bucket}/{reader.root}{JOB_SUMMARY}"}))
        except CollectError as exc:
            raise SystemExit(f"collect: {exc}") from None
    return report_missing(reader.job_id, found)
