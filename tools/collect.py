"""`python -m tools.collect PREFIX OUT [--format F]`: every result under a prefix, streamed into one dataset file."""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
from pathlib import Path
from typing import Iterator

from runtime.agent.messages import parse_s3_uri
from runtime.agent.results import SCHEMA, result_key
from tools import target as targets
from tools.collect_formats import FORMATS, guess_format
from tools.local_aws import aws_client
from tools.outputs import stack_outputs
from tools.progress import Bar

JOBS_FOLDER = "_jobs/"  # runtime.agent.jobs keeps manifests and chunk markers here, under the results prefix


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


def rows(s3, bucket: str, prefix: str, source_prefix: str, results_prefix: str, *, images: bool = False,
         threads: int = 16) -> Iterator[tuple[dict, bytes | None]]:
    """(row, image bytes or None) for each result under `prefix`, a listing page (1,000) at a time, in key order."""
    jobs = results_prefix + JOBS_FOLDER

    def fetch(key: str) -> tuple[dict, bytes | None]:
        row = _row(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), key, source_prefix)
        if not images or "error" in row:
            return row, None
        try:
            return row, s3.get_object(Bucket=row["bucket"], Key=row["key"])["Body"].read()
        except s3.exceptions.NoSuchKey:
            return {**row, "error": f"{row['image']} was captioned but is gone now; its caption is not collected"}, None

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [o["Key"] for o in page.get("Contents", [])
                    if o["Key"].endswith(".json") and not o["Key"].startswith(jobs)]
            yield from pool.map(fetch, keys)


def collect(s3, prefix_uri: str, out: Path, fmt: str, *, results_bucket: str, results_prefix: str,
            stream=None) -> dict:
    """Write every result under `prefix_uri` to `out` in `fmt`; returns the counts and where errors went."""
    bucket, prefix, source_prefix = results_location(prefix_uri, results_bucket, results_prefix)
    writer = FORMATS[fmt](out)
    bar, captions, errors = Bar(f"collect s3://{bucket}/{prefix}", stream=stream, every_s=2.0), 0, 0
    try:
        for row, image in rows(s3, bucket, prefix, source_prefix, results_prefix, images=writer.needs_images):
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
            "results": f"s3://{bucket}/{prefix}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.collect", description=__doc__.split(":", 1)[1])
    parser.add_argument("prefix", help="s3://<bucket>/<images prefix>/ (or a results prefix)")
    parser.add_argument("out", type=Path, help="a .jsonl or .parquet file, or a folder for --format imagefolder")
    parser.add_argument("--format", choices=sorted(FORMATS), help="default: from OUT's suffix (jsonl, parquet)")
    parser.add_argument("--target", choices=("local", "aws"), default=None)
    args = parser.parse_args(argv)
    try:
        parse_s3_uri(args.prefix)
    except ValueError as exc:
        raise SystemExit(f"collect: PREFIX {exc}") from None
    target = targets.resolve(args.target)
    outputs = stack_outputs(target.stack_name, target.region, target.endpoint_url)
    report = collect(aws_client("s3", target.region, target.endpoint_url), args.prefix, args.out,
                     args.format or guess_format(args.out), results_bucket=outputs["ResultsBucket"],
                     results_prefix=outputs["ResultsPrefix"])
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
