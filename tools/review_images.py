"""Rows and image bytes for the review page: a local caption run, an S3 prefix's results, or a job's outputs.

Each source returns caption rows (tools.review_rows.ROW_COLUMNS first) paired with their image's bytes, or None
where there is no image to show. The S3 listing and reading is tools.collect's and tools.collect_shards'; shard
members are read by the agent's own bounded readers (runtime/untrusted/tar.py, parquet.py).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from runtime.agent.config import AgentConfig
from runtime.agent.parts import output
from runtime.s3_keys import parse_s3_uri
from runtime.untrusted import parquet, tar
from runtime.untrusted.samples import ShardError
from tools import collect, collect_shards
from tools.job_folder import JobReader, image_uris, parquet_output
from tools.review_rows import read_rows, sample

LIMITS = AgentConfig()  # the agent's bounds on one image and one shard apply here too


def _bounded(path: Path) -> bytes | None:
    try:
        if path.stat().st_size > LIMITS.max_image_bytes:
            return None
        return path.read_bytes()
    except OSError:
        return None


PAGE = 64  # images fetched at a time: the page's thumbnails are made as the images arrive
# (row, its image's bytes or None) for each sampled row, fetched as iterated; and how many rows there were in all
Pairs = tuple[Iterator[tuple[dict, bytes | None]], int]


def local_run(rows_file: Path, n: int | None, seed: int) -> Pairs:
    """The sampled rows of a caption run's file; each uri a local path (relative ones: to here, else to the file)."""
    chosen, total = sample(read_rows(rows_file), n, seed)

    def pairs() -> Iterator[tuple[dict, bytes | None]]:
        for row in chosen:
            path = Path(str(row["uri"]))
            if not path.is_absolute() and not path.exists():
                path = rows_file.parent / path
            yield row, _bounded(path) if path.is_file() else None

    return pairs(), total


def _contract(row: dict) -> dict:
    """A tools.collect row in the row contract, whichever of its shapes collect writes."""
    uri = row.get("uri") or row.get("image")
    return {
        **row,
        "uri": uri,
        "key": row.get("key") or uri,
        "caption": row.get("caption"),
        "error": row.get("error"),
        "model": row.get("model"),
        "model_sha256": row.get("model_sha256"),
    }


def _results(s3, bucket: str, keys: list[str], source_prefix: str) -> Iterator[tuple[dict, bytes | None]]:
    pages = (keys[start : start + PAGE] for start in range(0, len(keys), PAGE))
    return ((_contract(row), image) for row, image in collect.rows(s3, bucket, pages, source_prefix, images=True))


def prefix(s3, prefix_uri: str, n: int | None, seed: int, *, results_bucket: str, results_prefix: str) -> Pairs:
    """A sample of the results under an images (or results) prefix, each with its image from the images bucket."""
    bucket, key_prefix, source_prefix = collect.results_location(prefix_uri, results_bucket, results_prefix)
    keys = [key for page in collect.prefix_pages(s3, bucket, key_prefix, results_prefix) for key in page]
    chosen, total = sample(({"uri": key} for key in keys), n, seed)
    return _results(s3, bucket, [row["uri"] for row in chosen], source_prefix), total


def job(s3, job_id: str, n: int | None, seed: int, *, results_bucket: str, results_prefix: str) -> Pairs:
    """A sample of a job's rows: a dataset job's from its output Parquet files, a listed job's from its results."""
    reader = JobReader.for_job(s3, results_bucket, results_prefix, job_id)
    manifest = reader.read_manifest()
    if not parquet_output(manifest):
        keys = [key for page in collect.job_pages(image_uris(reader, manifest), results_prefix) for key in page]
        chosen, total = sample(({"uri": key} for key in keys), n, seed)
        return _results(s3, results_bucket, [row["uri"] for row in chosen], ""), total
    rows, total = sample(_output_rows(reader, collect_shards.outputs(reader, manifest)), n, seed)
    return _with_members(s3, manifest, rows), total


def _output_rows(reader: JobReader, found: collect_shards.Outputs) -> Iterable[dict]:
    for _index, key, size in tqdm(found.present, desc=f"job {reader.job_id} outputs", unit="file", disable=None):
        data = collect_shards._download(reader.s3, reader.bucket, key, size, collect_shards.MAX_FILE_BYTES)
        yield from output.read(data).to_pylist()


def _with_members(s3, manifest: dict, rows: list[dict]) -> Iterator[tuple[dict, bytes | None]]:
    """Each row with its image, in order: read from its shard (each shard streamed once, up to its last wanted
    sample; rows come shard by shard in index order, as the job's files hold them), or GET by its own URI for a job
    that listed images."""
    formats = {entry["uri"]: entry.get("format") for entry in manifest["shards"]}
    by_shard: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_shard[row["shard"]].append(row)
    for shard, shard_rows in by_shard.items():
        if formats.get(shard) == "keys":
            yield from ((row, _object(s3, row["uri"])) for row in shard_rows)
            continue
        wanted = {row["index"]: row for row in shard_rows}
        try:
            for found in _members(s3, shard, formats.get(shard), manifest, max(wanted)):
                row = wanted.pop(found.index, None)
                if row is not None:
                    yield row, found.data
        except (ShardError, OSError, ValueError, s3.exceptions.ClientError) as exc:  # the rows still show
            print(f"gallery: warning: {shard}: {exc}; its rows are shown without thumbnails", file=sys.stderr)
        yield from ((row, None) for row in wanted.values())


def _members(s3, shard: str, kind: str | None, manifest: dict, last: int):
    bucket, key = parse_s3_uri(shard)
    if kind == "tar":
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            for found in tar.iter_samples(
                body, max_member_bytes=LIMITS.max_image_bytes, max_samples=LIMITS.max_shard_samples
            ):
                yield found
                if found.index >= last:
                    return
        finally:
            body.close()
    elif kind == "parquet":
        size = int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
        samples = parquet.iter_samples(
            parquet.RangedFile(s3, bucket, key, size),
            image_column=manifest.get("image_column"),
            key_column=manifest.get("key_column"),
            max_member_bytes=LIMITS.max_image_bytes,
            max_samples=LIMITS.max_shard_samples,
        )
        for found in samples:
            yield found
            if found.index >= last:
                return


def _object(s3, uri: str) -> bytes | None:
    try:
        bucket, key = parse_s3_uri(uri)
        reply = s3.get_object(Bucket=bucket, Key=key)
        if int(reply.get("ContentLength") or 0) > LIMITS.max_image_bytes:
            reply["Body"].close()
            return None
        data = reply["Body"].read(LIMITS.max_image_bytes + 1)
        return data if len(data) <= LIMITS.max_image_bytes else None
    except (ValueError, s3.exceptions.ClientError):
        return None
