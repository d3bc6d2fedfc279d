"""A job's folder (runtime.agent.layout) read: its manifest, and its state now, every kind of job.

Every job the one job engine expanded (its manifest has a "kind") is read the same way (ShardJobReader): parts done /
failed / in flight / waiting, images and images/s over the current run, and its ETA (a dataset job's parts are its
shards). A prefix or URI-list job expanded by an agent before that engine (its manifest lists its images, with no
"kind") is still read from its chunk markers (JobReader: done / total / failed): `view` picks the reader.
tools.job_progress draws either; tools.collect and tools.collect_shards gather what they point to.

The folder is written only by agents, so it is trusted as the proof of a shard. Dataset markers are re-read only when
their ETag changes (a retry overwrites them); whether a shard is in flight comes from listing times alone: its started
marker is no older than the run's queued.json and than its own marker (both whole seconds).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
from typing import Iterator

from runtime.agent.config import AgentConfig
from runtime.agent.layout import (
    JOB_CHUNKS,
    JOB_MANIFEST,
    JOB_RUNS,
    JOB_STARTED,
    JOB_SUMMARY,
    RUN_QUEUED,
    job_root,
    run_root,
)
from runtime.agent.messages import parse_s3_uri
from runtime.aws import object_exists
from runtime.errors import CaptionKitError

# The names inside a job's folder, as runtime/agent/ledger.py writes them (see its module docstring).
MANIFEST, SUMMARY, CHUNKS = JOB_MANIFEST, JOB_SUMMARY, JOB_CHUNKS


def parquet_output(manifest: dict) -> bool:
    """True for a dataset job (its captions are Parquet files under the job); False for a prefix or URI-list job,
    whose output is a result JSON per image."""
    return manifest.get("kind") not in (None, "images")


def image_uris(reader: JobReader, manifest: dict) -> Iterator[str]:
    """Every image URI of a prefix or URI-list job, in order: from its part files (read one at a time), or from the
    manifest itself for a job expanded before the one job engine."""
    if "kind" not in manifest:
        yield from manifest["images"]
        return
    for entry in manifest["shards"]:
        yield from reader._json(parse_s3_uri(entry["uri"])[1])["images"]


class JobNotFound(CaptionKitError, LookupError):
    """No manifest for this job id: not submitted, not expanded yet, or another stack/results prefix."""


@dataclasses.dataclass
class JobState:
    """A prefix or URI-list job expanded before the one job engine, as its files say now; `complete` once the summary
    is written."""

    job_id: str
    total: int
    done: int
    failed: int
    complete: bool
    created_at: str
    summary_uri: str

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def rate_since_created(self, now: datetime.datetime | None = None) -> float | None:
        """Images per second since the job was created: the ETA's first estimate, before the bar measures."""
        now = now or datetime.datetime.now(datetime.UTC)
        elapsed = (now - datetime.datetime.fromisoformat(self.created_at)).total_seconds()
        return self.finished / elapsed if elapsed > 0 and self.finished else None


class JobReader:
    """Reads a job's manifest once (every kind); `read` is for a job expanded before the one job engine: its chunk
    markers as they appear (each read once: markers never change). `view` gives the reader of any job."""

    def __init__(self, s3, bucket: str, root: str, job_id: str) -> None:
        self.s3, self.bucket, self.root, self.job_id = s3, bucket, root, job_id
        self.manifest: dict | None = None
        self.markers: dict[str, dict] = {}

    @classmethod
    def for_job(cls, s3, bucket: str, results_prefix: str, job_id: str) -> JobReader:
        return cls(s3, bucket, job_root(AgentConfig(results_prefix=results_prefix), job_id), job_id)

    @classmethod
    def from_summary_uri(cls, s3, summary_uri: str, job_id: str) -> JobReader:
        """From the `summary` location that `python -m runtime submit` prints."""
        bucket, key = parse_s3_uri(summary_uri)
        return cls(s3, bucket, key[: -len(SUMMARY)], job_id)

    def _json(self, key: str) -> dict:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def read_manifest(self) -> dict:
        """The job's manifest (read once); JobNotFound if there is none yet."""
        if self.manifest is None:
            try:
                self.manifest = self._json(self.root + MANIFEST)
            except self.s3.exceptions.NoSuchKey:
                raise JobNotFound(
                    f"no s3://{self.bucket}/{self.root}{MANIFEST} yet: job {self.job_id!r} was not "
                    "submitted to this stack, or no agent has picked it up (is the fleet running?)"
                ) from None
        return self.manifest

    def read(self) -> JobState:
        self.read_manifest()
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.root + CHUNKS)
        for key in [o["Key"] for page in pages for o in page.get("Contents", [])]:
            if key not in self.markers:
                self.markers[key] = self._json(key)
        summary = self.root + SUMMARY
        complete = object_exists(self.s3, self.bucket, summary)
        return JobState(
            self.job_id,
            len(self.manifest["images"]),
            sum(m["done"] for m in self.markers.values()),
            sum(len(m["failed"]) for m in self.markers.values()),
            complete,
            self.manifest["created_at"],
            f"s3://{self.bucket}/{summary}",
        )


def _utc(value: str | datetime.datetime) -> datetime.datetime:
    moment = value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


@dataclasses.dataclass
class ShardState:
    """A job as its folder says now (its parts: a dataset job's shards, or part files of image URIs); `complete` once
    the current run's summary is written."""

    job_id: str
    kind: str
    source: str
    shards: int
    run: str | None
    queued_at: str | None
    done: int  # shards whose latest marker is done (error_shards of them have error rows)
    failed: int
    in_flight: int
    waiting: int
    error_shards: int
    images_ok: int
    images_errors: int
    images_total: int | None  # a MANIFEST, prefix or URI-list job knows it; a SHARDS job learns it shard by shard
    run_shards: int  # shards this run queued
    run_finished: int  # of them, finished in this run
    run_samples: int  # samples those shards held
    elapsed_s: float
    complete: bool
    summary_uri: str

    def images_per_s(self) -> float | None:
        return self.run_samples / self.elapsed_s if self.elapsed_s > 0 and self.run_finished else None

    def shards_per_s(self) -> float | None:
        return self.run_finished / self.elapsed_s if self.elapsed_s > 0 and self.run_finished else None

    def eta_s(self) -> float | None:
        """Seconds until the run's last shard, at the run's own pace so far; None before a shard finished."""
        rate, left = self.shards_per_s(), self.in_flight + self.waiting
        return 0.0 if not left else (left / rate if rate else None)

    def counts(self) -> dict:
        """The numbers, for JSON output (submit --wait, status)."""
        rate = self.images_per_s()
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "run": self.run,
            "shards": self.shards,
            "shards_done": self.done,
            "shards_failed": self.failed,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "error_shards": self.error_shards,
            "done": self.images_ok,
            "errors": self.images_errors,
            "failed": self.images_errors,  # as the summary names them: images with an error record or row
            "total": self.images_total,
            "images_per_s": None if rate is None else round(rate, 2),
            "complete": self.complete,
            "summary": self.summary_uri,
        }


class ShardJobReader:
    """Reads the folder of a job of the one job engine: the manifest once, a marker again only when its ETag
    changed."""

    def __init__(self, jobs: JobReader, threads: int = 16) -> None:
        self.jobs, self.threads = jobs, threads
        self.s3, self.bucket, self.root, self.job_id = jobs.s3, jobs.bucket, jobs.root, jobs.job_id
        self._markers: dict[int, tuple[str, dict]] = {}  # index -> (etag, marker)
        self._queued: dict[str, dict] = {}

    def _json(self, key: str) -> dict:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def _listing(self, folder: str) -> list[dict]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.root + folder)
        return [o for page in pages for o in page.get("Contents", [])]

    @staticmethod
    def _index(key: str) -> int | None:
        stem = key.rsplit("/", 1)[-1].split(".", 1)[0]
        return int(stem) if stem.isdigit() else None

    def latest_run(self) -> str | None:
        """The newest run folder (run ids begin with a UTC time stamp, so their order is their time order)."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.root + JOB_RUNS, Delimiter="/"
        )
        runs = [p["Prefix"][len(self.root + JOB_RUNS) : -1] for page in pages for p in page.get("CommonPrefixes", [])]
        return max(runs, default=None)

    def queued(self, run: str) -> dict | None:
        """A run's queued.json (read once), or None before the agent expanding it has written it."""
        if run not in self._queued:
            queued = self.optional_json(run_root(self.root, run) + RUN_QUEUED)
            if queued is None:
                return None
            self._queued[run] = queued
        return self._queued[run]

    def markers(self) -> tuple[dict[int, dict], dict[int, datetime.datetime]]:
        """({index: marker}, {index: when it was written}), fetching only the markers new or changed since last."""
        listed = {i: o for o in self._listing(JOB_CHUNKS) if (i := self._index(o["Key"])) is not None}
        stale = [(i, o) for i, o in listed.items() if self._markers.get(i, ("",))[0] != o["ETag"]]
        with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
            for (i, o), marker in zip(stale, pool.map(lambda io: self._json(io[1]["Key"]), stale)):
                self._markers[i] = (o["ETag"], marker)
        return ({i: self._markers[i][1] for i in listed}, {i: o["LastModified"] for i, o in listed.items()})

    def optional_json(self, key: str) -> dict | None:
        """One object of the folder as JSON, or None when it is absent."""
        try:
            return self._json(key)
        except self.s3.exceptions.NoSuchKey:
            return None

    def summary(self) -> dict | None:
        return self.optional_json(self.root + JOB_SUMMARY)

    def read(self, now: datetime.datetime | None = None) -> ShardState:
        """The job now; JobNotFound before an agent has expanded it."""
        now = now or datetime.datetime.now(datetime.UTC)
        manifest = self.jobs.read_manifest()
        markers, written = self.markers()
        started = {i: o["LastModified"] for o in self._listing(JOB_STARTED) if (i := self._index(o["Key"])) is not None}
        run = self.latest_run()
        queued = (self.queued(run) if run else None) or {}
        # S3 keeps LastModified in whole seconds: a shard started in the run's first second is still this run's
        begun = _utc(queued["created_at"]) if queued else None
        since = begun.replace(microsecond=0) if begun else None
        pending = set(queued.get("indexes", [])) - {i for i, m in markers.items() if m.get("run") == run}
        # pending has no marker of this run; a started marker as new as the run and as its marker is this run's
        flying = {
            i
            for i in pending
            if i in started
            and (since is None or started[i] >= since)
            and (i not in written or started[i] >= written[i])
        }
        finished = [m for m in markers.values() if m.get("run") == run]
        latest = [m for i, m in markers.items() if i not in pending]
        summary = self.summary()
        complete = summary is not None and summary.get("run") == run and run is not None
        end = _utc(summary["finished_at"]) if complete and summary.get("finished_at") else now
        return ShardState(
            job_id=self.job_id,
            kind=manifest.get("kind", "?"),
            source=manifest.get("source", "?"),
            shards=len(manifest["shards"]),
            run=run,
            queued_at=queued.get("created_at"),
            done=sum(m["status"] == "done" for m in latest),
            failed=sum(m["status"] == "failed" for m in latest),
            in_flight=len(flying),
            waiting=len(manifest["shards"]) - len(latest) - len(flying),
            error_shards=sum(m["status"] == "done" and m.get("errors", 0) > 0 for m in latest),
            images_ok=sum(m.get("ok", 0) for m in latest),
            images_errors=sum(m.get("errors", 0) for m in latest),
            images_total=manifest.get("images"),
            run_shards=len(queued.get("indexes", [])),
            run_finished=len(finished),
            run_samples=sum(m.get("samples", 0) for m in finished),
            elapsed_s=max(0.0, (end - begun).total_seconds()) if begun else 0.0,
            complete=complete,
            summary_uri=f"s3://{self.bucket}/{self.root}{JOB_SUMMARY}",
        )


def view(reader: JobReader) -> JobReader | ShardJobReader:
    """The reader that fits the job's kind (its manifest says it): JobNotFound before an agent has expanded it."""
    return ShardJobReader(reader) if "kind" in reader.read_manifest() else reader
