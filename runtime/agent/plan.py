"""Planning a job: expand any job into its part messages, once, whoever receives its message.

`expand` is the one entry, for every kind of job: it freezes `manifest.json` once (the list of parts: a SHARDS job's
shard files, or part files of URIs written first for a MANIFEST job and for a prefix or URI-list job), decides the
run's part indexes once (`runs/<run>/queued.json`: a redelivered job message queues the same ones), and sends one
`captionkit.shard` message per index. What a part's output is depends on the kind (runtime.agent.parts.run): a
result JSON per image for a prefix or URI-list job, one Parquet file per part for a dataset job.

`runtime submit` first checks a dataset job with the submitter's credentials (runtime.agent.checks), so a job that
cannot work is refused before a message exists. Expansion raises `UnknownMessage` for a job no agent can ever expand
(a retry of no job, a manifest line out of scope, a job id reused for another source): the worker dead-letters that
message alone, with the reason.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import time
from typing import Iterator

from runtime.agent import ledger
from runtime.agent.checks import list_shards
from runtime.agent.config import AgentConfig
from runtime.agent.layout import (
    JOB_MANIFEST,
    JOB_REFUSED,
    RUN_QUEUED,
    is_own_result,
    job_root,
    part_key,
    results_location,
    run_root,
)
from runtime.agent.messages import MAX_SHARDS, SHARD_TYPE, parse_s3_uri
from runtime.agent.metrics import log
from runtime.agent.queue import send_all
from runtime.agent.scope import Scope
from runtime.errors import PlanError, UnknownMessage
from runtime.untrusted import manifests

__all__ = ["expand", "list_images"]


def list_images(s3, config: AgentConfig, prefix_uri: str, progress=None) -> Iterator[str]:
    """Every image URI under a prefix (by `image_suffixes`), in key order, skipping folders and the agent's own
    results; `progress` is called after each listing page (1,000 keys)."""
    bucket, prefix = parse_s3_uri(prefix_uri)
    own = results_location(config)
    suffixes = tuple(s.lower() for s in config.image_suffixes)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            key = entry["Key"]
            if key.endswith("/") or is_own_result(own, bucket, key):
                continue
            if not suffixes or key.lower().endswith(suffixes):
                yield f"s3://{bucket}/{key}"
        if progress:
            progress()


def _freeze(s3, config: AgentConfig, job: dict, scope: Scope, progress=None) -> dict:
    """Write the job's manifest.json (after the part files of a MANIFEST, prefix or URI-list job) and return it."""
    bucket, root = config.results_bucket_name, job_root(config, job["job_id"])
    images = None
    try:
        if job["kind"] == "shards":
            shards = list_shards(s3, job["source"], scope)
        else:
            shards, images = _write_parts(s3, config, job, _uris(s3, config, job, scope, progress), progress)
    except PlanError as exc:  # the input is malformed or reaches outside: no agent will ever expand it
        raise UnknownMessage(f"job {job['job_id']}: {exc}") from None
    if len(shards) > MAX_SHARDS:
        raise UnknownMessage(f"job {job['job_id']}: {len(shards):,} parts, over {MAX_SHARDS:,}")
    manifest = {
        "job_id": job["job_id"],
        "kind": job["kind"],
        "source": _source(job),
        "created_at": ledger.now(),
        "chunks": len(shards),
        "shards": shards,
        "image_column": job["image_column"],
        "key_column": job["key_column"],
        "images": images,
    }
    ledger.put_json(s3, bucket, root + JOB_MANIFEST, manifest)
    return manifest


def _source(job: dict) -> str:
    """What the job reads, as its manifest and summary name it: a prefix, a shards prefix or manifest, or for a URI
    list its length and the SHA-256 of its URIs (a job id submitted again with another list is refused)."""
    if job["source"] is not None:
        return job["source"]
    digest = hashlib.sha256("\n".join(job["images"]).encode()).hexdigest()[:16]
    return f"{len(job['images'])} listed images ({digest})"


def _uris(s3, config: AgentConfig, job: dict, scope: Scope, progress=None) -> Iterator[str]:
    """The image URIs of a MANIFEST, prefix or URI-list job, in order (a manifest's checked line by line)."""
    if job["kind"] == "images":
        return iter(job["images"]) if job["images"] is not None else list_images(s3, config, job["source"], progress)
    return manifests.iter_uris(
        s3,
        job["source"],
        scope,
        key_column=job["key_column"],
        max_bytes=config.max_manifest_bytes,
        max_lines=config.max_manifest_lines,
        progress=progress,
    )


PART_WRITERS = 16  # parts in flight: 10 million keys are 10,000 PUTs, which one at a time outlast the job's hold


def _write_parts(s3, config: AgentConfig, job: dict, uris: Iterator[str], progress=None) -> tuple[list[dict], int]:
    """Cut a job's URIs into parts of the job's `part_size` (default `config.part_size(kind)`), written
    PART_WRITERS at a time (memory: that many parts); (their manifest entries in order, the number of images)."""
    bucket, root = config.results_bucket_name, job_root(config, job["job_id"])
    size = min(job.get("part_size") or config.part_size(job["kind"]), config.max_shard_samples)
    source = _source(job)
    futures, part, images = [], [], 0
    with concurrent.futures.ThreadPoolExecutor(PART_WRITERS) as pool:

        def flush():
            if len(futures) >= MAX_SHARDS:  # before the next PUT: a prefix of 100 million images writes nothing more
                raise PlanError(f"over {MAX_SHARDS:,} parts of {size:,} images; split the job")
            futures.append(pool.submit(_write_part, s3, bucket, root, source, len(futures), part))
            if len(futures) > PART_WRITERS:
                futures[-PART_WRITERS - 1].result()  # bounded: wait for the oldest still running
            if progress and len(futures) % PART_WRITERS == 0:
                progress()

        for uri in uris:
            part.append(uri)
            if len(part) == size:
                flush()
                images, part = images + len(part), []
        if part:
            flush()
            images += len(part)
        return [future.result() for future in futures], images


def _write_part(s3, bucket: str, root: str, source: str, index: int, uris: list[str]) -> dict:
    key = part_key(root, index)
    ledger.put_json(s3, bucket, key, {"source": source, "index": index, "images": uris})
    return {"uri": f"s3://{bucket}/{key}", "format": "keys", "size": len(uris)}


def _indexes(s3, config: AgentConfig, job: dict, manifest: dict, model) -> list[int]:
    """The shards this run redoes: a retry, those its choice names; a (re)submission, all but those done with
    this model and these settings."""
    found = ledger.markers(s3, config, job["job_id"], manifest)
    if job["kind"] == "retry":
        failed, errors = job["retry"] in ("failed", "both"), job["retry"] in ("errors", "both")
        return [
            index
            for index, marker in enumerate(found)
            if marker
            and (
                (failed and marker.get("status") == "failed")
                or (errors and marker.get("status") == "done" and marker.get("errors", 0) > 0)
            )
        ]
    settings = ledger.settings_fingerprint(model, config)
    return [
        index
        for index, marker in enumerate(found)
        if not (
            marker
            and marker.get("status") == "done"
            and marker.get("model_sha256") == model.sha256
            and marker.get("settings") == settings
        )
    ]


def _queue(s3, config: AgentConfig, job: dict, manifest: dict, model, fresh: bool) -> dict:
    """The run's queued.json: read if written (a redelivery), else decided now and written once (IfNoneMatch)."""
    bucket, root = config.results_bucket_name, job_root(config, job["job_id"])
    key = run_root(root, job["run"]) + RUN_QUEUED
    queued = ledger.get_json(s3, bucket, key)
    if queued is not None:
        return queued
    indexes = list(range(len(manifest["shards"]))) if fresh else _indexes(s3, config, job, manifest, model)
    queued = {
        "run": job["run"],
        "created_at": ledger.now(),
        "reason": f"retry:{job['retry']}" if job["kind"] == "retry" else "submit",
        "indexes": indexes,
    }
    if not ledger.put_json(s3, bucket, key, queued, only_new=True):
        queued = ledger.get_json(s3, bucket, key)  # another agent expanding the same message was first
    return queued


def expand(s3, sqs, config: AgentConfig, job: dict, model, progress=None) -> dict:
    """Freeze any job's manifest (once), queue the run (once) and send its part messages; returns the run's
    queued.json.

    Safe to repeat: a redelivered job message finds the manifest and the run and sends the same messages again (a
    shard done twice rewrites the same output). A run with nothing to do gets its summary now. `progress` is called
    as a manifest is read (the agent renews its hold on the job message). A new job refused (`UnknownMessage`)
    leaves its reason in its folder (`refused.json`, the first reason kept) before the message is dead-lettered.
    """
    try:
        return _expand(s3, sqs, config, job, model, progress)
    except UnknownMessage as exc:
        # only into a folder no job owns yet: a message naming another job's id must not mark that job refused
        bucket, root = config.results_bucket_name, job_root(config, job["job_id"])
        if ledger.get_json(s3, bucket, root + JOB_MANIFEST) is None:
            refused = {"job_id": job["job_id"], "run": job.get("run"), "refused_at": ledger.now(), "reason": str(exc)}
            ledger.put_json(s3, bucket, root + JOB_REFUSED, refused, only_new=True)
        raise


def _expand(s3, sqs, config: AgentConfig, job: dict, model, progress) -> dict:
    started = time.monotonic()
    bucket, root = config.results_bucket_name, job_root(config, job["job_id"])
    manifest, fresh = ledger.get_json(s3, bucket, root + JOB_MANIFEST), False
    if job["kind"] == "retry":
        if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
            raise UnknownMessage(
                f"job {job['job_id']}: nothing to retry (no manifest of parts at s3://{bucket}/{root}{JOB_MANIFEST}: "
                f"no such job, or one expanded before the one job engine)"
            )
    elif manifest is None:
        manifest, fresh = _freeze(s3, config, job, Scope.of(config), progress), True
    elif (manifest.get("kind"), manifest.get("source")) != (job["kind"], _source(job)):
        raise UnknownMessage(
            f"job {job['job_id']} was created over {manifest.get('source')!r} "
            f"({manifest.get('kind') or 'images, by an agent before the one job engine'}), not {_source(job)!r}; "
            f"use another job id"
        )
    queued = _queue(s3, config, job, manifest, model, fresh)
    count = len(manifest["shards"])
    bodies = [
        json.dumps({"type": SHARD_TYPE, "job_id": job["job_id"], "index": index, "count": count, "run": job["run"]})
        for index in queued["indexes"]
    ]
    send_all(sqs, config.queue_url, bodies, f"parts of job {job['job_id']}")
    if not queued["indexes"]:
        ledger.write_summary(s3, config, job["job_id"], manifest, queued)
    log(
        "info",
        event="job_expanded",
        job_id=job["job_id"],
        run=job["run"],
        kind=manifest.get("kind"),
        parts=count,
        queued=len(queued["indexes"]),
        skipped=count - len(queued["indexes"]) if job["kind"] != "retry" else None,
        new=fresh,
        seconds=round(time.monotonic() - started, 3),
    )
    return queued
