"""`python -m tools.collect PREFIX OUT [--format F]` (or `--job ID OUT`, `--job ID --list`): results streamed into one
dataset file. A dataset job (its manifest has a "kind") is merged from its shard files by tools.collect_shards."""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

from runtime.agent.messages import parse_s3_uri
from runtime.agent.layout import JOBS_FOLDER, result_key
from runtime.agent.results import SCHEMA
from tools import collect_shards
from tools import target as targets
from tools.collect_formats import FORMATS, guess_format
from tools.job_progress import JobNotFound, JobReader
from tools.local_aws import aws_client
from tools.outputs import stack_outputs
from tools.progress import Bar

def results_location(prefix_uri: str, results_bucket: str, results_prefix: str) -> tuple[str, str, str]:
    """(results bucket, results key prefix, source key prefix) for an images prefix or a results prefix."""
    _, key_prefix = parse_s3_uri(prefix_uri)
    if key_prefix.startswith(results_prefix):
        return results_bucket, key_prefix, key_prefix[len(results_prefix):]
    return results_bucket, result_key(results_prefix, key_prefix)[: -len(".json")], key_prefix


def _row(record: dict, key: str, source_prefix: str) -> dict:
    if record.get("schema") != SCHEMA or record.get("status") not in ("ok", "error"):
        return {"image": key, "error": f"not a {SCHEMA} record (schema {record.get('schema')!r}); skipped"}
    source = record["source"]
    row = {"image": f"s3://{source['bucket']}/{source['key']}", "model": record["model"]["name"],
           "model_sha256": record["model"]["sha256"], "relative": source["key"][len(source_prefix):],
           "bucket": source["bucket"], "key": source["key"]}
    if record["status"] == "error":
        return {**row, "error": record["error"]}
    return {**row, "caption": record["caption"]}


def prefix_pages(s3, bucket: str, prefix: str, results_prefix: str) -> Iterator[list[str]]:
    """The result keys under `prefix`, a listing page (1,000) at a time, skipping the jobs' own files."""
    jobs = results_prefix + JOBS_FOLDER
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield [o["Key"] for o in page.get("Contents", [])
               if o["Key"].endswith(".json") and not o["Key"].startswith(jobs)]


def job_pages(images: list[str], results_prefix: str, page: int = 1000) -> Iterator[list[str]]:
    """The result key of every image of a job's manifest (s3:// URIs), `page` at a time."""
    keys = [result_key(results_prefix, parse_s3_uri(uri)[1]) for uri in images]
    for start in range(0, len(keys), page):
        yield keys[start:start + page]


def rows(s3, bucket: str, pages: Iterable[list[str]], source_prefix: str, *, images: bool = False,
         threads: int = 16) -> Iterator[tuple[dict, bytes | None]]:
    """(row, image bytes or None) for each result key, a page at a time, in order; a missing result is an error row."""

    def fetch(key: str) -> tuple[dict, bytes | None]:
        try:
            row = _row(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), key, source_prefix)
        except s3.exceptions.NoSuchKey:
            return {"image": f"s3://{bucket}/{key}", "error": "no result yet: the image was never captioned"}, None
        if not images or "error" in row:
            return row, None
        try:
            return row, s3.get_object(Bucket=row["bucket"], Key=row["key"])["Body"].read()
        except s3.exceptions.NoSuchKey:
            return {**row, "error": f"{row['image']} was captioned but is gone now; its caption is not collected"}, None

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for keys in pages:
            yield from pool.map(fetch, keys)


def collect(s3, prefix_uri: str, out: Path, fmt: str, *, results_bucket: str, results_prefix: str,
            stream=None) -> dict:
    """Write every result under `prefix_uri` to `out` in `fmt`; returns the counts and where errors went."""
    bucket, prefix, source_prefix = results_location(prefix_uri, results_bucket, results_prefix)
    return _write(s3, bucket, prefix_pages(s3, bucket, prefix, results_prefix), source_prefix, out, fmt,
                  f"s3://{bucket}/{prefix}", stream)


def collect_job(s3, job_id: str, out: Path, fmt: str, *, results_bucket: str, results_prefix: str,
                stream=None) -> dict:
    """Write the results of every image of a job's manifest (a listed job has no prefix) to `out` in `fmt`."""
    reader = JobReader.for_job(s3, results_bucket, results_prefix, job_id)
    manifest = reader.read_manifest()
    keys = [parse_s3_uri(uri)[1] for uri in manifest["images"]]
    source_prefix = os.path.commonprefix(keys).rpartition("/")[0] + "/" if keys else ""
    return _write(s3, results_bucket, job_pages(manifest["images"], results_prefix),
                  "" if source_prefix == "/" else source_prefix, out, fmt, f"job {job_id}", stream)


def _write(s3, bucket: str, pages, source_prefix: str, out: Path, fmt: str, what: str, stream) -> dict:
    writer = FORMATS[fmt](out)
    bar, captions, errors = Bar(f"collect {what}", stream=stream, every_s=2.0), 0, 0
    try:
        for row, image in rows(s3, bucket, pages, source_prefix, images=writer.needs_images):
            if "error" in row:
                writer.error(row)
                errors += 1
            else:
                writer.caption(row, image)
                captions += 1
            bar.update(captions, errors)
        bar.update(captions, errors, force=True)
    finally:
        writer.close()
        bar.close()
    return {"captions": captions, "errors": errors, "out": str(out), "errors_file": str(writer.errors_path),
            "results": what}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.collect", description=__doc__.split(":", 1)[1],
        epilog="A dataset job exits 1 while some shards have no output yet (named on stderr), and 0 with a warning "
               "when the job is complete and the shards without output failed (make retry requeues them).")
    parser.add_argument("paths", nargs="*", metavar="PREFIX OUT",
                        help="s3://<bucket>/<images prefix>/ (or a results prefix), then a .jsonl or .parquet file, "
                             "or a folder for --format imagefolder; with --job, OUT alone")
    parser.add_argument("--job", metavar="ID", help="instead of a prefix: the images (or shards) of this batch job")
    parser.add_argument("--list", action="store_true",
                        help="with --job of a dataset job: print its shard files' s3:// URIs, write nothing")
    parser.add_argument("--format", choices=sorted(FORMATS), help="default: from OUT's suffix (jsonl, parquet)")
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
        raise SystemExit("collect: give OUT (a .jsonl or .parquet file, or a folder for --format imagefolder)")
    out = None if out is None else Path(out)
    target = targets.resolve(args.target)
    outputs = stack_outputs(target.stack_name, target.region, target.endpoint_url)
    s3 = aws_client("s3", target.region, target.endpoint_url)
    fmt = args.format or (guess_format(out) if out else None)
    where = {"results_bucket": outputs["ResultsBucket"], "results_prefix": outputs["ResultsPrefix"]}
    try:
        if args.job:
            reader = JobReader.for_job(s3, where["results_bucket"], where["results_prefix"], args.job)
            manifest = reader.read_manifest()
            if "kind" in manifest:
                return collect_shards.main(reader, manifest, out, fmt, list_only=args.list)
        if args.list:
            raise SystemExit("collect: --list is for a dataset job (SHARDS or MANIFEST); this is a prefix job")
        report = (collect_job(s3, args.job, out, fmt, **where) if args.job
                  else collect(s3, prefix, out, fmt, **where))
    except JobNotFound as exc:
        raise SystemExit(f"collect: {exc}") from None
    print(json.dumps(report))
    return 0

if __name__ == "__main__":
    sys.exit(main())
