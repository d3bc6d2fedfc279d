"""A dataset job's captions: its `shards/<index>.parquet` files merged in index order into one caption table.

The table is runtime/caption_table.py's (`.jsonl`, `.csv` or `.parquet`), written in one streaming pass; `--list`
prints the shard files' URIs instead, for tools that read them directly.

Memory stays flat as the job grows: one output file at a time is held (refused over `max_file_bytes` before it is
read), and it is read by the runtime's decoding child with the bounds the agent reads shards with (its schema
checked, every cell at most 64 KiB, a batch of rows at a time): the job folder is written only by agents, but a
replaced file must not take collect down or blow its memory up.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from runtime.agent.layout import JOB_SHARDS, JOB_SUMMARY, part_marker, shard_output
from runtime.agent.parts.output import COLUMNS, SCHEMA
from runtime.caption_table import COLUMNS as TABLE_COLUMNS
from runtime.caption_table import TableWriter
from runtime.errors import CaptionKitError
from runtime.progress import bar
from runtime.untrusted import parquet
from runtime.untrusted.samples import ShardError
from tools.collect_formats import IMAGEFOLDER, check_output
from tools.job_folder import JobReader, ShardJobReader

MAX_FILE_BYTES = 2 * 1024**3  # one shard's captions; the largest allowed shard makes a few hundred MiB of them


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
    listed = {
        o["Key"]: o["Size"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root + JOB_SHARDS)
        for o in page.get("Contents", [])
    }
    present, missing = [], []
    for index in range(len(manifest["shards"])):
        key = shard_output(root, index)
        if key in listed:
            present.append((index, key, listed[key]))
        else:
            missing.append(index)
    shards = ShardJobReader(reader)
    failed = [i for i in missing if (shards.optional_json(part_marker(root, i)) or {}).get("status") == "failed"]
    summary, run = shards.summary(), shards.latest_run()
    return Outputs(present, missing, failed, summary is not None and summary.get("run") == run)


def _rows_of(data: bytes, uri: str) -> Iterator[pa.Table]:
    """The output file's rows, a batch at a time, read by the decoding child with the agent's bounds (its schema
    checked and every cell bounded before a row is copied: a replaced file cannot blow collect's memory up)."""
    try:
        for batch in parquet.iter_rows(parquet.BytesFile(data), columns=COLUMNS):
            yield pa.Table.from_pylist(batch, schema=SCHEMA)
    except (ShardError, pa.ArrowException) as exc:
        raise CollectError(f"{uri}: not a CaptionKit shard output ({exc}); nothing after it was collected") from None


def _download(s3, bucket: str, key: str, size: int, max_file_bytes: int) -> bytes:
    uri = f"s3://{bucket}/{key}"
    if size > max_file_bytes:
        raise CollectError(
            f"{uri} is {size:,} bytes, over the {max_file_bytes:,} collect holds at once; read it "
            "directly (make collect LIST=1 prints the shard files)"
        )
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read(max_file_bytes + 1)
    if len(data) > max_file_bytes:
        raise CollectError(f"{uri} grew past {max_file_bytes:,} bytes while collect read it")
    return data


# the caption table's leading columns first (runtime/caption_table.py), then the dataset job's own
TABLE_SCHEMA = pa.schema(
    [SCHEMA.field(name) for name in TABLE_COLUMNS] + [field for field in SCHEMA if field.name not in TABLE_COLUMNS]
)


def merge(
    reader: JobReader,
    found: Outputs,
    out: Path,
    fmt: str | None = None,
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
    overwrite: bool = False,
    stream=None,
) -> dict:
    """Copy every present output file, in index order and a row group at a time, into the caption table `out`."""
    if fmt == IMAGEFOLDER:
        raise CollectError("a dataset job collects into a .jsonl, .csv or .parquet file, not an imagefolder")
    check_output(out, fmt, overwrite)
    rows = errors = 0
    with (
        TableWriter(out, schema=TABLE_SCHEMA) as writer,
        bar(len(found.present), f"collect job {reader.job_id}", unit="shard", stream=stream, every_s=2.0) as progress,
    ):
        for _index, key, size in found.present:
            data = _download(reader.s3, reader.bucket, key, size, max_file_bytes)
            for table in _rows_of(data, f"s3://{reader.bucket}/{key}"):
                writer.write_table(table)
                rows += table.num_rows
                errors += table.num_rows - table.column("error").null_count
            del data
            progress.update(1)
            progress.set_postfix(rows=rows, errors=errors, refresh=False)
    return {"rows": rows, "captions": rows - errors, "errors": errors, "shards": len(found.present), "out": str(out)}


def report_missing(job_id: str, found: Outputs, stream=None) -> int:
    """Say on `stream` (stderr) which shards have no output; the exit code: 1 while some are still to come,
    0 when the job is complete and the missing ones failed (a warning: make retry requeues them)."""
    stream = stream or sys.stderr
    if not found.missing:
        return 0
    shown = lambda ids: ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")  # noqa: E731
    if found.still_running or not found.complete:
        stream.write(
            f"collect: {len(found.missing)} of the job's shards have no output yet (indexes "
            f"{shown(found.missing)}): the job is not complete; make status JOB={job_id}, then collect "
            "again\n"
        )
        return 1
    stream.write(
        f"collect: warning: {len(found.failed)} shard(s) failed and have no output (indexes "
        f"{shown(found.failed)}); their samples are not in the file: make retry JOB={job_id} ONLY=failed\n"
    )
    return 0


def main(
    reader: JobReader,
    manifest: dict,
    out: Path | None,
    fmt: str | None,
    *,
    list_only: bool,
    max_file_bytes: int = MAX_FILE_BYTES,
    overwrite: bool = False,
) -> int:
    """`tools.collect --job ID` for a dataset job (its manifest has a "kind")."""
    found = outputs(reader, manifest)
    if list_only:
        for _index, key, _size in found.present:
            print(f"s3://{reader.bucket}/{key}")
    else:
        if out is None:
            raise SystemExit("collect: give OUT (a .jsonl, .csv or .parquet file), or LIST=1 for the shard files")
        try:
            print(
                json.dumps(
                    {
                        **merge(reader, found, out, fmt, max_file_bytes=max_file_bytes, overwrite=overwrite),
                        "missing": found.missing,
                        "summary": f"s3://{reader.bucket}/{reader.root}{JOB_SUMMARY}",
                    }
                )
            )
        except CollectError as exc:
            raise SystemExit(f"collect: {exc}") from None
    return report_missing(reader.job_id, found)
