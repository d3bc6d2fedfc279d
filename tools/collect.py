"""`python -m tools.collect PREFIX OUT [--overwrite]` (or `--job ID OUT`, `--job ID --list`): results streamed into one
dataset file. A dataset job (its manifest has a "kind") is merged from its shard files by tools.collect_shards."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

from runtime.agent.layout import JOBS_FOLDER, result_key
from runtime.agent.messages import parse_s3_uri
from runtime.agent.results import SCHEMA
from runtime.cli_errors import run
from runtime.progress import bar
from tools import collect_shards
from tools import target as targets
from tools.collect_formats import check_output, formats, open_output
from tools.job_folder import JobNotFound, JobReader, image_uris, parquet_output
from tools.local_aws import aws_client
from tools.outputs import stack_outputs


def results_location(prefix_uri: str, results_bucket: str, results_prefix: str) -> tuple[str, str, str]:
    """(results bucket, results key prefix, source key prefix) for an images prefix or a results prefix."""
    _, key_prefix = parse_s3_uri(prefix_uri)
    if key_prefix.startswith(results_prefix):
        return results_bucket, key_prefix, key_prefix[len(results_prefix) :]
    return results_bucket, result_key(results_prefix, key_prefix)[: -len(".json")], key_prefix


def _row(record: dict, result_uri: str, source_prefix: str) -> dict:
    """The caption table's row for one result record (plus `bucket` and `source_key`, to fetch the image)."""
    if record.get("schema") != SCHEMA or record.get("status") not in ("ok", "error"):
        return {
            "uri": result_uri,
            "key": result_uri.rpartition("/")[2],
            "caption": None,
            "model": None,
            "model_sha256": None,
            "error": f"not a {SCHEMA} record (schema {record.get('schema')!r}); skipped",
        }
    source = record["source"]
    row = {
        "uri": f"s3://{source['bucket']}/{source['key']}",
        "key": source["key"][len(source_prefix) :],
        "model": record["model"]["name"],
        "model_sha256": record["model"]["sha256"],
        "bucket": source["bucket"],
        "source_key": source["key"],
    }
    if record["status"] == "error":
        return {**row, "caption": None, "error": record["error"]}
    return {**row, "caption": record["caption"], "error": None}


def prefix_pages(s3, bucket: str, prefix: str, results_prefix: str) -> Iterator[list[tuple[str, str | None]]]:
    """(result key, None) under `prefix`, a listing page (1,000) at a time, skipping the jobs' own files."""
    jobs = results_prefix + JOBS_FOLDER
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield [
            (o["Key"], None)
            for o in page.get("Contents", [])
            if o["Key"].endswith(".json") and not o["Key"].startswith(jobs)
        ]


def job_pages(images: Iterable[str], results_prefix: str, page: int = 1000) -> Iterator[list[tuple[str, str | None]]]:
    """(result key, image URI) of every image of a job (s3:// URIs), `page` at a time."""
    batch = []
    for uri in images:
        batch.append((result_key(results_prefix, parse_s3_uri(uri)[1]), uri))
        if len(batch) == page:
            yield batch
            batch = []
    if batch:
        yield batch


def rows(
    s3,
    bucket: str,
    pages: Iterable[list[tuple[str, str | None]]],
    source_prefix: str,
    *,
    images: bool = False,
    threads: int = 16,
) -> Iterator[tuple[dict, bytes | None]]:
    """(row, image bytes or None) for each result key, a page at a time, in order; a missing result is an error row."""

    def fetch(item: tuple[str, str | None]) -> tuple[dict, bytes | None]:
        key, image_uri = item
        try:
            record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            uri = image_uri or f"s3://{bucket}/{key}"
            source_key = parse_s3_uri(uri)[1]
            return {
                "uri": uri,
                "key": source_key[len(source_prefix) :] if source_key.startswith(source_prefix) else source_key,
                "caption": None,
                "model": None,
                "model_sha256": None,
                "error": "no result yet: the image was never captioned (make status, then collect again)",
            }, None
        row = _row(record, f"s3://{bucket}/{key}", source_prefix)
        if not images or row["error"] is not None:
            return row, None
        try:
            return row, s3.get_object(Bucket=row["bucket"], Key=row["source_key"])["Body"].read()
        except s3.exceptions.NoSuchKey:
            return {
                **row,
                "caption": None,
                "error": f"{row['uri']} was captioned but is gone now; its caption is not collected",
            }, None

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for keys in pages:
            yield from pool.map(fetch, keys)


def collect(
    s3,
    prefix_uri: str,
    out: Path,
    fmt: str | None = None,
    *,
    results_bucket: str,
    results_prefix: str,
    overwrite: bool = False,
    stream=None,
) -> dict:
    """Write every result under `prefix_uri` to `out` (the caption table, or `fmt` imagefolder); returns counts."""
    bucket, prefix, source_prefix = results_location(prefix_uri, results_bucket, results_prefix)
    writer = open_output(out, fmt, overwrite)
    return _write(
        s3,
        bucket,
        prefix_pages(s3, bucket, prefix, results_prefix),
        source_prefix,
        writer,
        out,
        f"s3://{bucket}/{prefix}",
        stream,
    )


def collect_job(
    s3,
    job_id: str,
    out: Path,
    fmt: str | None = None,
    *,
    results_bucket: str,
    results_prefix: str,
    overwrite: bool = False,
    stream=None,
) -> dict:
    """Write the results of every image of a prefix or URI-list job (a listed job has no prefix) to `out`."""
    reader = JobReader.for_job(s3, results_bucket, results_prefix, job_id)
    manifest = reader.read_manifest()
    images = list(image_uris(reader, manifest))
    keys = [parse_s3_uri(uri)[1] for uri in images]
    source_prefix = os.path.commonprefix(keys).rpartition("/")[0] + "/" if keys else ""
    writer = open_output(out, fmt, overwrite)
    return _write(
        s3,
        results_bucket,
        job_pages(images, results_prefix),
        "" if source_prefix == "/" else source_prefix,
        writer,
        out,
        f"job {job_id}",
        stream,
        total=len(images),
    )


def _write(
    s3, bucket: str, pages, source_prefix: str, writer, out: Path, what: str, stream, total: int | None = None
) -> dict:
    captions = errors = 0
    try:
        with bar(total, f"collect {what}", unit="img", stream=stream, every_s=2.0) as progress:
            for row, image in rows(s3, bucket, pages, source_prefix, images=writer.needs_images):
                if row["error"] is not None:
                    writer.error(row)
                    errors += 1
                else:
                    writer.caption(row, image)
                    captions += 1
                progress.update(1)
                progress.set_postfix(errors=errors, refresh=False)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return {"rows": captions + errors, "captions": captions, "errors": errors, "out": str(out), "results": what}


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.collect",
        description=__doc__.split(":", 1)[1],
        epilog="A dataset job exits 1 while some shards have no output yet (named on stderr), and 0 with a warning "
        "when the job is complete and the shards without output failed (make retry requeues them).",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PREFIX OUT",
        help="s3://<bucket>/<images prefix>/ (or a results prefix), then a .jsonl, .csv or .parquet "
        "file, or a folder for --format imagefolder; with --job, OUT alone",
    )
    parser.add_argument("--job", metavar="ID", help="instead of a prefix: the images (or shards) of this batch job")
    parser.add_argument(
        "--list",
        action="store_true",
        help="with --job of a dataset job: print its shard files' s3:// URIs, write nothing",
    )
    parser.add_argument("--format", choices=formats(), help="default and only: OUT's extension; or imagefolder")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (else refused)")
    parser.add_argument("--target", choices=("local", "aws"), default=None)
    args = parser.parse_args(argv)
    prefix, out = (None, args.paths[0] if args.paths else None) if args.job else (args.paths + [None, None])[:2]
    if len(args.paths) > (1 if args.job else 2):
        parser.error(f"too many paths {args.paths}: give PREFIX OUT, or --job ID OUT")
    if not args.job:
        try:
            parse_s3_uri(prefix)
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"collect: PREFIX {exc}; or give JOB=<id>") from None
    if out is None and not args.list:
        raise SystemExit("collect: give OUT (a .jsonl, .csv or .parquet file, or a folder for --format imagefolder)")
    out = None if out is None else Path(out)
    if out is not None:  # refused before anything is read: an unknown extension, an earlier run's file
        check_output(out, args.format, args.overwrite)
    target = targets.resolve(args.target)
    outputs = stack_outputs(target.stack_name, target.region, target.endpoint_url)
    s3 = aws_client("s3", target.region, target.endpoint_url)
    where = {
        "results_bucket": outputs["ResultsBucket"],
        "results_prefix": outputs["ResultsPrefix"],
        "overwrite": args.overwrite,
    }
    try:
        if args.job:
            reader = JobReader.for_job(s3, where["results_bucket"], where["results_prefix"], args.job)
            manifest = reader.read_manifest()
            if parquet_output(manifest):
                return collect_shards.main(
                    reader, manifest, out, args.format, list_only=args.list, overwrite=args.overwrite
                )
        if args.list:
            raise SystemExit("collect: --list is for a dataset job (SHARDS or MANIFEST); this is a prefix job")
        report = (
            collect_job(s3, args.job, out, args.format, **where)
            if args.job
            else collect(s3, prefix, out, args.format, **where)
        )
    except JobNotFound as exc:
        raise SystemExit(f"collect: {exc}") from None
    print(json.dumps(report, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(_main, argv, "collect")


if __name__ == "__main__":
    sys.exit(main())
