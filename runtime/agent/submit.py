"""`python -m runtime submit`: queue a batch job over existing images (a prefix or a list of S3 URIs), or a
dataset job (--shards, --manifest), or a retry of any job's failed parts (--retry), each checked before anything is
queued."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import posixpath
import re
import secrets
import sys

from runtime import aws
from runtime.agent import checks, ledger
from runtime.agent.config import load_config
from runtime.agent.layout import JOB_MANIFEST, job_root
from runtime.agent.messages import JOB_ID, JOB_TYPE, MAX_BODY_BYTES, MAX_PART_SIZE, RETRY_CHOICES, parse_s3_uri
from runtime.agent.scope import Scope
from runtime.errors import CaptionKitError, PlanError, SubmitRefused
from runtime.lambdas.wake_on_upload.wake import wake_quietly


def time_id() -> str:
    """A UTC time stamp and 3 random bytes: the default id of a job, and the id of every run of a dataset job."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def dataset_job_id(uri: str) -> str:
    """The default id of a dataset job: its source's last folder (or file name) as a slug and 10 hex of the URI's
    SHA-256, so that submitting the same source again resumes the same job (its done shards are skipped)."""
    name = posixpath.basename(parse_s3_uri(uri)[1].rstrip("/")) or parse_s3_uri(uri)[0]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip("._-")[:60].rstrip("._-") or "dataset"
    return f"{slug}-{hashlib.sha256(uri.encode()).hexdigest()[:10]}"


def build_dataset_job(
    kind: str,
    value: str,
    run: str,
    job_id: str | None = None,
    image_column: str | None = None,
    key_column: str | None = None,
    only: str = "both",
) -> dict:
    """The message of a dataset job: kind `shards` (`value` a prefix), `manifest` (a key file) or `retry` (`value`
    the job id; `only` failed|errors|both). ValueError when the arguments cannot make one."""
    if kind == "retry":
        if only not in RETRY_CHOICES:
            raise ValueError(f"--only must be one of {', '.join(RETRY_CHOICES)}, not {only!r}")
        job_id, body = value, {"retry": only}
    else:
        key = parse_s3_uri(value)[1]
        if kind == "shards" and key and not key.endswith("/"):
            value += "/"
        body = {
            kind: value,
            **({"image_column": image_column} if image_column else {}),
            **({"key_column": key_column} if key_column else {}),
        }
        job_id = job_id or dataset_job_id(value)
    for name, what in ((job_id, "job id"), (run, "run id")):
        if not isinstance(name, str) or not JOB_ID.match(name):
            raise ValueError(f"{what} {name!r}: use 1-128 letters, digits, '.', '_' or '-'")
    return {"type": JOB_TYPE, "job_id": job_id, "run": run, **body}


def check_dataset_job(s3, config, job: dict) -> dict:
    """What `runtime submit` checks before queueing a dataset job (`PlanError` names the first problem)."""
    scope = Scope.of(config)
    if "shards" in job:
        return checks.check_shards(
            s3, job["shards"], scope, image_column=job.get("image_column"), key_column=job.get("key_column")
        )
    if "manifest" in job:
        return checks.check_manifest(
            s3,
            job["manifest"],
            scope,
            key_column=job.get("key_column"),
            max_bytes=config.max_manifest_bytes,
            max_lines=config.max_manifest_lines,
        )
    manifest = ledger.get_json(s3, config.results_bucket_name, job_root(config, job["job_id"]) + JOB_MANIFEST)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise PlanError(
            f"job {job['job_id']} is not a job of this fleet (or one expanded before the one job engine): no "
            f"manifest of parts under s3://{config.results_bucket_name}/{job_root(config, job['job_id'])}"
        )
    return {"job_id": job["job_id"], "shards": len(manifest["shards"]), "retry": job["retry"]}


def build_job(uris: list[str], job_id: str | None = None, run: str | None = None) -> dict:
    """The job message: one `prefix` (a URI ending in '/') or a list of image URIs, and its run (default: a new
    one). ValueError if neither."""
    job_id, run = job_id or time_id(), run or time_id()
    if not JOB_ID.match(job_id):
        raise ValueError(f"job id {job_id!r}: use 1-128 letters, digits, '.', '_' or '-'")
    for uri in uris:
        parse_s3_uri(uri)
    if len(uris) == 1 and uris[0].endswith("/"):
        return {"type": JOB_TYPE, "job_id": job_id, "run": run, "prefix": uris[0]}
    prefixes = [uri for uri in uris if uri.endswith("/")]
    if prefixes or not uris:
        raise ValueError("give either one prefix (s3://bucket/prefix/) or one or more image URIs, not both")
    return {"type": JOB_TYPE, "job_id": job_id, "run": run, "images": uris}


def unreadable_by_workers(config, uris: list[str]) -> str | None:
    """Why the workers cannot read some of `uris`, or None. Their role may read only the images bucket's
    images prefix (stacks/worker_policy.py, ReadImages): anything else would end as error records."""
    if not config.images_bucket:
        return (
            "images_bucket is not set, so submit cannot check that the workers may read these images: "
            "set CAPTIONKIT_IMAGES_BUCKET (and CAPTIONKIT_IMAGES_PREFIX if not incoming/)"
        )
    scope = Scope.of(config)
    outside = [uri for uri in uris if scope.outside(*parse_s3_uri(uri))]
    if outside:
        return (
            f"{len(outside)} of {len(uris)} URIs are outside s3://{config.images_bucket}/{config.images_prefix}, "
            f"the only place the workers may read (e.g. {outside[0]}); copy the images there and submit that"
        )
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime submit", description=__doc__.split(":", 1)[1])
    parser.add_argument("uris", nargs="*", help="s3://bucket/prefix/ (ending in '/'), or image URIs")
    parser.add_argument("--from-file", help="a file of image URIs, one a line")
    parser.add_argument(
        "--shards",
        metavar="URI",
        help="a dataset job over every .tar (webdataset) and .parquet "
        "shard under s3://bucket/prefix/; captions go to one Parquet file per shard",
    )
    parser.add_argument(
        "--manifest",
        metavar="URI",
        help="a dataset job over the images a manifest lists: CSV or "
        "text (keys or s3:// URIs), Parquet with a key column, or an S3 Inventory manifest.json",
    )
    parser.add_argument(
        "--retry",
        metavar="JOB_ID",
        help="requeue the parts of a job (shards of a dataset job) that failed or have errors (see --only)",
    )
    parser.add_argument(
        "--only",
        choices=RETRY_CHOICES,
        default="both",
        help="with --retry: failed parts, parts with error rows or records, or both (default: both)",
    )
    parser.add_argument(
        "--part-size",
        type=int,
        help="images per part of a prefix, URI-list or --manifest job (one message and one marker each; default: "
        "the fleet's job_chunk_size, 64, or manifest_chunk_size, 1000): smaller parts spread a job over more "
        "workers and scale the fleet further, at more requests per image",
    )
    parser.add_argument("--image-column", help="with --shards: the Parquet image column (default: guessed)")
    parser.add_argument("--key-column", help="with --shards or --manifest: the column of sample keys or image keys")
    parser.add_argument(
        "--job-id",
        help="default: a time stamp and a random suffix; for --shards and --manifest, "
        "the source's last folder and 10 hex of the SHA-256 of its URI, so that submitting the same "
        "source again resumes the same job (shards done with the same model and settings are "
        "skipped)",
    )
    parser.add_argument("--config", help="the agent's JSON settings (queue_url, results bucket); env wins")
    return parser


def _dataset_job(args) -> dict | None:
    """The dataset job the arguments ask for, or None for a prefix / URI-list job. ValueError if mixed."""
    sources = [name for name in ("shards", "manifest", "retry") if getattr(args, name)]
    if not sources:
        if args.image_column or args.key_column:
            raise ValueError("--image-column and --key-column go with --shards or --manifest")
        return None
    if len(sources) > 1 or args.uris or args.from_file:
        raise ValueError("give one of: image URIs or a prefix, --shards, --manifest, --retry")
    kind = sources[0]
    if (
        (args.image_column and kind != "shards")
        or (args.key_column and kind == "retry")
        or (args.job_id and kind == "retry")
    ):
        raise ValueError(
            "--image-column goes with --shards, --key-column with --shards or --manifest, and --retry "
            "names its job itself (no --job-id)"
        )
    if kind == "retry":
        return build_dataset_job("retry", args.retry, time_id(), only=args.only)
    return build_dataset_job(kind, getattr(args, kind), time_id(), args.job_id, args.image_column, args.key_column)


def _part_size(size: int, job: dict) -> int:
    """--part-size checked as the agents check it (runtime.agent.messages): ValueError when they would refuse it."""
    if "shards" in job or "retry" in job:
        raise ValueError("--part-size goes with a prefix, image URIs or --manifest (a shard is one part)")
    if not 1 <= size <= MAX_PART_SIZE:
        raise ValueError(f"--part-size {size}: expected 1 to {MAX_PART_SIZE:,}")
    return size


def submit(argv: list[str] | None = None) -> dict:
    """Check and queue the one job that `python -m runtime submit`'s arguments describe; return what was queued: the
    job id, the run and what was checked (dataset jobs), where its summary will be, and whether the fleet was woken.
    SubmitRefused says why nothing was queued."""
    args = _parser().parse_args(argv)
    uris = list(args.uris)
    if args.from_file:
        with open(args.from_file) as lines:
            uris += [line.strip() for line in lines if line.strip()]
    checked = None
    try:
        config = load_config(args.config)
        config.require("queue_url")
        dataset = _dataset_job(args)
        job = build_job(uris, args.job_id) if dataset is None else dataset
        if args.part_size is not None:  # refused before anything is read
            job["part_size"] = _part_size(args.part_size, job)
        if dataset is None:
            refusal = unreadable_by_workers(config, uris)
        else:
            try:
                refusal, checked = None, check_dataset_job(aws.client("s3", config.region), config, job)
            except PlanError as exc:
                refusal = str(exc)
    except (CaptionKitError, ValueError, OSError) as exc:
        raise SubmitRefused(str(exc)) from None
    if refusal:
        raise SubmitRefused(f"refused, nothing queued: {refusal}")
    body = json.dumps(job)
    if len(body.encode()) > MAX_BODY_BYTES:
        raise SubmitRefused(
            f"{len(job['images'])} URIs make a {len(body.encode()):,}-byte message, over the "
            f"{MAX_BODY_BYTES:,} the agents read; put the images under one prefix and submit that"
        )
    aws.client("sqs", config.region).send_message(QueueUrl=config.queue_url, MessageBody=body)
    woke = {"wake": wake_quietly(aws.client("autoscaling", config.region), config.asg_name)} if config.asg_name else {}
    where = (
        f"s3://{config.results_bucket_name}/{job_root(config, job['job_id'])}summary.json"
        if config.results_bucket_name
        else f"<results bucket>/{job_root(config, job['job_id'])}summary.json"
    )
    checks = {"checked": checked} if checked is not None else {}
    return {"job_id": job["job_id"], "run": job["run"], **checks, "summary": where, **woke}


def main(argv=None) -> int:
    """`python -m runtime submit`: `submit`, then its answer as one JSON line (or why not, on stderr)."""
    try:
        submitted = submit(argv)
    except SubmitRefused as exc:
        print(f"submit: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(submitted))
    return 0


if __name__ == "__main__":
    sys.exit(main())
