"""The books of every job: its manifest (the proof of its part messages), part markers, runs, the summary, the notice.

Every object here lives in the job folder (runtime.agent.layout), which only agents write. A job's parts are its
dataset shards or its part files of image URIs (a MANIFEST, prefix or URI-list job); a part message names only
(job, index, count, run) and is acted on only if the manifest has that many parts. A part's marker is the proof
that it was captioned with a given model and settings, so a resubmission may skip it. A run is complete when
`runs/<run>/done/` holds every queued index (counted by groups of 1,000: runtime.agent.tally, so finishing a part
lists only its own group); whoever sees that writes `summary.json` from all the markers and
`runs/<run>/finished.json`, and, once per run, tells SNS. A finished run is immutable: a replayed message of it
writes nothing (`finished`), and a run never replaces the summary of a newer one (run ids begin with their UTC
time, so they sort as the runs were made, as status reads them).
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime
import hashlib
import json

from runtime.agent import tally
from runtime.agent.config import AgentConfig
from runtime.agent.layout import (
    JOB_MANIFEST,
    JOB_SHARDS,
    JOB_SUMMARY,
    NOTIFIED,
    RUN_DONE,
    RUN_FINISHED,
    RUN_QUEUED,
    done_marker,
    job_root,
    part_marker,
    results_location_uri,
    run_root,
    started_marker,
)
from runtime.agent.notice import notify_once
from runtime.agent.s3json import get_json, put_json
from runtime.agent.work import ShardRef
from runtime.aws import GONE_CODES, RetryLater, error_code
from runtime.errors import UnknownMessage

MAX_LISTED = 100  # failures and error shards named in a summary; the markers hold the rest


def now() -> str:
    """UTC now, ISO 8601 to the second: the time stamps of markers, runs and summaries."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def settings_fingerprint(model, config: AgentConfig) -> str:
    """16 hex of the generation settings a caption depends on: a resubmission skips only shards made with these."""
    settings = {
        "model_sha256": model.sha256,
        "prompt_sha256": getattr(model, "prompt_sha256", None),
        "backend": config.backend,
        "quantize": config.quantize,
        "max_pixels": config.max_pixels,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class Manifests:
    """The job manifests (and runs' queued.json) part messages are proved against, kept by key with their ETag and
    read again only when it changed (If-None-Match): each part of a large job would otherwise download them whole."""

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
    """A job's manifest, the proof of its part messages: `UnknownMessage` (saying `what` asked) when
    there is none (only an agent expanding the job writes it) or it is not JSON, `RetryLater` when it cannot be read
    now."""
    bucket, key = config.results_bucket_name, job_root(config, job_id) + JOB_MANIFEST
    try:
        return (manifests or Manifests()).get(s3, bucket, key)
    except Exception as exc:  # noqa: BLE001 - only "no such manifest" is an answer; anything else: retry later
        if error_code(exc) in GONE_CODES:
            raise UnknownMessage(
                f"{what}: the job has no manifest at s3://{bucket}/{key}; only an agent that "
                f"expanded the job sends its messages"
            ) from None
        if isinstance(exc, ValueError):
            raise UnknownMessage(f"{what}: its manifest s3://{bucket}/{key} is not JSON") from None
        raise RetryLater(f"{what}: reading its manifest: {exc.__class__.__name__}: {exc}") from exc


def read_manifest(s3, config: AgentConfig, job_id: str, manifests: Manifests | None = None) -> dict:
    """The job's frozen manifest; `UnknownMessage` when there is none (only an expanding agent writes it) or it is
    not a manifest of parts (a job expanded before the one job engine), `RetryLater` when it cannot be read now."""
    bucket, key = config.results_bucket_name, job_root(config, job_id) + JOB_MANIFEST
    manifest = read_job_manifest(s3, config, job_id, f"job {job_id}", manifests)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise UnknownMessage(f"job {job_id}: s3://{bucket}/{key} is not a manifest of parts (no shard list)")
    return manifest


def read_queued(s3, config: AgentConfig, job_id: str, run: str, kept: Manifests | None = None) -> dict | None:
    """`runs/<run>/queued.json` of the job (the run's indexes), or None when that run was never queued. With `kept`,
    its body is downloaded once per agent (a run of a million parts writes 7 MB there), then only revalidated."""
    bucket, key = config.results_bucket_name, run_root(job_root(config, job_id), run) + RUN_QUEUED
    if kept is None:
        return get_json(s3, bucket, key)
    try:
        return kept.get(s3, bucket, key)
    except Exception as exc:  # noqa: BLE001 - "never queued" is an answer; anything else is the caller's to sort
        if error_code(exc) in GONE_CODES:
            return None
        raise


def finished(s3, config: AgentConfig, ref: ShardRef) -> str | None:
    """Why the shard message's run takes no more writes (it is finished), or None while it is open."""
    bucket, root = config.results_bucket_name, job_root(config, ref.job_id)
    record = get_json(s3, bucket, run_root(root, ref.run) + RUN_FINISHED)
    if record is None:  # a run finished before its record existed: the summary names it
        summary = get_json(s3, bucket, root + JOB_SUMMARY)
        record = summary if isinstance(summary, dict) and summary.get("run") == ref.run else None
    if record is None:
        return None
    return (
        f"run {ref.run} of job {ref.job_id} finished at {record.get('finished_at')}: a replayed message of it "
        f"writes nothing"
    )


def start_shard(s3, config: AgentConfig, ref: ShardRef, agent: str) -> None:
    """Mark the shard in flight (`started/<index>.json`): progress counts started shards without a newer marker."""
    put_json(
        s3,
        config.results_bucket_name,
        started_marker(job_root(config, ref.job_id), ref.index),
        {"index": ref.index, "run": ref.run, "started_at": now(), "agent": agent},
    )


def finish_shard(
    s3, config: AgentConfig, ref: ShardRef, marker: dict, manifests: Manifests | None = None, sns=None
) -> dict | None:
    """Write the shard's marker, then its run's `done/<index>`; when that completes the run, the summary (returned).

    Idempotent: a redelivered shard rewrites its marker and the same empty `done` object, so each index counts once.
    An index its run did not queue gets the marker only. One LIST per shard (its group's), whatever the run's size.
    """
    bucket, root = config.results_bucket_name, job_root(config, ref.job_id)
    put_json(s3, bucket, part_marker(root, ref.index), marker)
    queued = read_queued(s3, config, ref.job_id, ref.run, manifests)
    if queued is None or ref.index not in queued["indexes"]:
        return None
    run = run_root(root, ref.run)
    s3.put_object(Bucket=bucket, Key=done_marker(run, ref.index), Body=b"")
    if not tally.finished(
        s3, bucket, run + RUN_DONE, lambda index: done_marker(run, index), run, ref.index, queued["indexes"]
    ):
        return None
    return write_summary(s3, config, ref.job_id, read_manifest(s3, config, ref.job_id, manifests), queued, sns=sns)


def markers(s3, config: AgentConfig, job_id: str, manifest: dict) -> list[dict | None]:
    """Every shard's marker in index order (None where the shard has none yet), read 8 at a time."""
    bucket, root = config.results_bucket_name, job_root(config, job_id)
    keys = [part_marker(root, index) for index in range(len(manifest["shards"]))]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda key: get_json(s3, bucket, key), keys))


def summarize(config: AgentConfig, job_id: str, manifest: dict, queued: dict, found: list[dict | None]) -> dict:
    """The summary of the job after run `queued["run"]`, from its manifest, that run and every marker."""
    bucket, root, run = config.results_bucket_name, job_root(config, job_id), queued["run"]
    present = [marker for marker in found if marker]
    done = [marker for marker in present if marker.get("status") == "done"]
    failed = [marker for marker in present if marker.get("status") == "failed"]
    this_run = [marker for marker in present if marker.get("run") == run]
    finished_at = max([queued["created_at"]] + [marker["finished_at"] for marker in this_run])
    seconds = max(
        0.0,
        (
            datetime.datetime.fromisoformat(finished_at) - datetime.datetime.fromisoformat(queued["created_at"])
        ).total_seconds(),
    )
    run_samples = sum(marker.get("samples", 0) for marker in this_run)
    latest = max(present, key=lambda marker: (marker.get("finished_at", ""), marker["index"]), default={})
    return {
        "job_id": job_id,
        "kind": manifest.get("kind"),
        "source": manifest.get("source"),
        "run": run,
        "shards": len(manifest["shards"]),
        "shards_done": len(done),
        "shards_failed": len(failed),
        "images": sum(marker.get("samples", 0) for marker in present),
        "done": sum(marker.get("ok", 0) for marker in present),
        "failed": sum(marker.get("errors", 0) for marker in present),
        "errors": sum(marker.get("errors", 0) for marker in present),
        "failures": [
            {"shard": marker.get("shard"), "index": marker["index"], "error": marker.get("error")} for marker in failed
        ][:MAX_LISTED],
        "error_shards": [marker["index"] for marker in done if marker.get("errors", 0) > 0][:MAX_LISTED],
        "error_images": [image for marker in done for image in marker.get("error_images", [])][:MAX_LISTED],
        "results": results_location_uri(config)
        if manifest.get("kind") == "images"
        else f"s3://{bucket}/{root}{JOB_SHARDS}",
        "manifest": f"s3://{bucket}/{root}{JOB_MANIFEST}",
        "created_at": queued["created_at"],
        "finished_at": finished_at,
        "seconds": seconds,
        "images_per_s": round(run_samples / seconds, 3) if seconds else 0.0,
        "model_sha256": latest.get("model_sha256"),
        "settings": latest.get("settings"),
        "collect": f"make collect JOB={job_id} OUT={job_id}.parquet",
    }


def write_summary(s3, config: AgentConfig, job_id: str, manifest: dict, queued: dict, sns=None) -> dict:
    """Write the job's `summary.json` after run `queued` from every marker and tell SNS once: the one summary writer.

    The summary is written unless a newer run's is there, then `runs/<run>/finished.json`; `runs/<run>/notified` is
    put first, IfNoneMatch, so of agents racing to finish a run one publishes, and a replay publishes nothing.
    """
    bucket, root = config.results_bucket_name, job_root(config, job_id)
    summary = summarize(config, job_id, manifest, queued, markers(s3, config, job_id, manifest))
    current = get_json(s3, bucket, root + JOB_SUMMARY)
    if not (isinstance(current, dict) and str(current.get("run")) > queued["run"]):
        put_json(s3, bucket, root + JOB_SUMMARY, summary)
    put_json(
        s3,
        bucket,
        run_root(root, queued["run"]) + RUN_FINISHED,
        {"run": queued["run"], "finished_at": summary["finished_at"]},
        only_new=True,
    )
    notify_once(
        s3,
        config,
        run_root(root, queued["run"]) + NOTIFIED,
        {"run": queued["run"]},
        summary,
        f"s3://{bucket}/{root}{JOB_SUMMARY}",
        sns=sns,
    )
    return summary
