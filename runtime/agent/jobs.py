"""Batch jobs: fan a job out into chunk messages (crash-safe), prove and mark chunks, write the summary, notify.

A job's files live under `<results prefix>_jobs/<job id>/` (runtime.agent.layout). Its manifest is frozen at the
first expansion (a redelivered job reuses it), and a chunk message is acted on only if it is exactly a slice of
it (`prove_chunk`). The summary is rewritten identically on replays; SNS is told once, when it is first written.
"""
from __future__ import annotations

import collections
import concurrent.futures
import datetime
import json
import time

from runtime.agent import tally
from runtime.agent.config import AgentConfig
from runtime.agent.layout import (JOB_CHUNKS, JOB_MANIFEST, JOB_SUMMARY, NOTIFIED, chunk_marker, is_own_result,
                                  job_root, results_location)
from runtime.agent.messages import CHUNK_TYPE, MAX_CHUNK_IMAGES, UnknownMessage, parse_s3_uri
from runtime.agent.metrics import log
from runtime.agent.notice import notify_once
from runtime.agent.queue import send_all
from runtime.agent.s3json import put_json, read_json
from runtime.agent.work import Chunk, Item, Work
from runtime.aws import GONE_CODES, RetryLater, error_code, object_exists

def list_images(s3, config: AgentConfig, prefix_uri: str) -> list[str]:
    """Every image URI under a prefix (by `image_suffixes`), skipping folders and the agent's own results."""
    bucket, prefix = parse_s3_uri(prefix_uri)
    own = results_location(config)
    suffixes = tuple(s.lower() for s in config.image_suffixes)
    uris = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            key = entry["Key"]
            if key.endswith("/") or is_own_result(own, bucket, key):
                continue
            if not suffixes or key.lower().endswith(suffixes):
                uris.append(f"s3://{bucket}/{key}")
    return uris


def expand(s3, sqs, config: AgentConfig, job: dict) -> dict:
    """Write the job's manifest (once) and send its chunk messages; returns the manifest.

    Safe to repeat after a crash: the manifest is reused, so the chunks are the same; a chunk sent
    twice only rewrites the same results and the same marker.
    """
    started = time.monotonic()
    bucket, root = config.results_bucket_name, job_root(config, job["job_id"])
    try:
        manifest = read_json(s3, bucket, root + JOB_MANIFEST)
    except s3.exceptions.NoSuchKey:
        images = job["images"] if job["images"] is not None else list_images(s3, config, job["prefix"])
        size = min(config.job_chunk_size or config.batch_size, MAX_CHUNK_IMAGES)
        manifest = {"job_id": job["job_id"], "source": job["prefix"] or f"{len(images)} listed images",
                    "images": images, "chunk_size": size, "chunks": -(-len(images) // size),
                    "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        put_json(s3, bucket, root + JOB_MANIFEST, manifest)
    size, count = manifest["chunk_size"], manifest["chunks"]
    bodies = [json.dumps({"type": CHUNK_TYPE, "job_id": job["job_id"], "index": index, "count": count,
                          "images": manifest["images"][index * size:(index + 1) * size]})
              for index in range(count)]
    send_all(sqs, config.queue_url, bodies, f"chunks of job {job['job_id']}")
    if count == 0:
        write_summary(s3, config, job["job_id"], manifest)
    log("info", event="job_expanded", job_id=job["job_id"], kind="images", images=len(manifest["images"]),
        chunks=count, seconds=round(time.monotonic() - started, 3))
    return manifest


class Manifests:
    """The job manifests chunks are proved against, kept by key with their ETag and read again only when it
    changed (If-None-Match): each chunk of a large job would otherwise download the whole manifest."""

    def __init__(self, size: int = 4):
        self.size, self._kept = size, collections.OrderedDict()

    def get(self, s3, bucket: str, key: str):
        kept = self._kept.get((bucket, key))
        try:
            reply = s3.get_object(Bucket=bucket, Key=key, **({"IfNoneMatch": kept[0]} if kept else {}))
        except Exception as exc:  # noqa: BLE001 - "not modified" is an answer; the caller sorts the rest
            if kept is None or error_code(exc) not in ("304", "NotModified"):
                raise
            self._kept.move_to_end((bucket, key))
            return kept[1]
        manifest = json.loads(reply["Body"].read())
        self._kept[(bucket, key)] = (reply.get("ETag", ""), manifest)
        self._kept.move_to_end((bucket, key))
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return manifest


def read_job_manifest(s3, config: AgentConfig, job_id: str, what: str, manifests: Manifests | None = None):
    """A job's manifest, the proof of its chunk and shard messages: `UnknownMessage` (saying `what` asked) when
    there is none (only an agent expanding the job writes it) or it is not JSON, `RetryLater` when it cannot be read
    now."""
    bucket, key = config.results_bucket_name, job_root(config, job_id) + JOB_MANIFEST
    try:
        return (manifests or Manifests()).get(s3, bucket, key)
    except Exception as exc:  # noqa: BLE001 - only "no such manifest" is an answer; anything else: retry later
        if error_code(exc) in GONE_CODES:
            raise UnknownMessage(f"{what}: the job has no manifest at s3://{bucket}/{key}; only an agent that "
                                 f"expanded the job sends its messages") from None
        if isinstance(exc, ValueError):
            raise UnknownMessage(f"{what}: its manifest s3://{bucket}/{key} is not JSON") from None
        raise RetryLater(f"{what}: reading its manifest: {exc.__class__.__name__}: {exc}") from exc


def prove_chunk(s3, config: AgentConfig, work: Work, manifests: Manifests | None = None) -> None:
    """Raise `UnknownMessage` unless the chunk message is exactly slice `index` of its job's manifest, with the
    manifest's chunk count; `RetryLater` when the manifest cannot be read now.

    Anyone who may send to the queue can forge a chunk; only an agent expanding the job writes its manifest (in
    the results bucket). A chunk that matches it can only redo what the real chunk does, byte for byte.
    """
    chunk = work.chunk
    bucket, key = config.results_bucket_name, job_root(config, chunk.job_id) + JOB_MANIFEST
    forged = f"job chunk {chunk.job_id}/{chunk.index} (count {chunk.count})"
    manifest = read_job_manifest(s3, config, chunk.job_id, forged, manifests)
    try:
        size, count, images = manifest["chunk_size"], manifest["chunks"], manifest["images"]
        expected = images[chunk.index * size:(chunk.index + 1) * size]
    except (KeyError, TypeError) as exc:
        raise UnknownMessage(f"{forged}: its manifest s3://{bucket}/{key} is malformed ({exc!r})") from None
    if count != chunk.count:
        raise UnknownMessage(f"{forged}: the job's manifest has {count} chunks, not {chunk.count}")
    if [ref.uri for ref in work.images] != expected:
        raise UnknownMessage(f"{forged}: its images are not the job manifest's slice {chunk.index} "
                             f"({len(work.images)} named, {len(expected)} expected)")


def finish_chunk(s3, config: AgentConfig, chunk: Chunk, items: list[Item]) -> bool:
    """Mark a chunk done (all its images have results); write the summary if it was the last. True if so.

    The markers are counted by groups of 1,000 (runtime.agent.tally): one LIST per chunk, whatever the job's size.
    """
    bucket, root = config.results_bucket_name, job_root(config, chunk.job_id)
    failed = [{"uri": item.ref.uri, "error": item.error} for item in items if item.error]
    put_json(s3, bucket, chunk_marker(root, chunk.index),
             {"index": chunk.index, "done": len(items) - len(failed), "failed": failed})
    if not tally.finished(s3, bucket, root + JOB_CHUNKS, lambda index: chunk_marker(root, index), root, chunk.index,
                          range(chunk.count)):
        return False
    write_summary(s3, config, chunk.job_id, read_json(s3, bucket, root + JOB_MANIFEST))
    return True


def write_summary(s3, config: AgentConfig, job_id: str, manifest: dict) -> dict:
    """Add up every chunk marker into `summary.json` (deterministic, so a replay rewrites the same bytes)."""
    bucket, root = config.results_bucket_name, job_root(config, job_id)
    keys = [chunk_marker(root, index) for index in range(manifest["chunks"])]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        markers = list(pool.map(lambda key: read_json(s3, bucket, key), keys))
    failed = [failure for marker in markers for failure in marker["failed"]]
    source = manifest["source"]
    results = (f"s3://{bucket}/{config.results_prefix}{parse_s3_uri(source)[1]}" if source.startswith("s3://")
               else f"s3://{bucket}/{config.results_prefix}<source key>.json")
    summary = {"job_id": job_id, "source": manifest["source"], "images": len(manifest["images"]),
               "done": sum(marker["done"] for marker in markers), "failed": len(failed),
               "failures": failed, "created_at": manifest["created_at"],
               "results": results,
               "manifest": f"s3://{bucket}/{root}{JOB_MANIFEST}"}
    first = config.job_topic_arn and not object_exists(s3, bucket, root + JOB_SUMMARY)
    put_json(s3, bucket, root + JOB_SUMMARY, summary)
    if first:  # only when the summary is first complete, not on replays
        notify_once(s3, config, root + NOTIFIED, {"job_id": job_id}, summary, f"s3://{bucket}/{root}{JOB_SUMMARY}")
    return summary
