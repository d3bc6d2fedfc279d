"""A job's progress from its folder (runtime.agent.layout), every kind of job: `make status JOB=` and `submit --wait`.

Every job the one job engine expanded (its manifest has a "kind") is read the same way: parts done / failed / in
flight / waiting, images and images/s over the current run, and its ETA (a dataset job's parts are its shards). A
prefix or URI-list job expanded by an agent before that engine (its manifest lists its images, with no "kind") is
still read from its chunk markers (done / total / failed): `view` picks the reader, `render` and `wait` take either.

The folder is written only by agents, so it is trusted as the proof of a shard. Dataset markers are re-read only when
their ETag changes (a retry overwrites them); whether a shard is in flight comes from listing times alone: its started
marker is no older than the run's queued.json and than its own marker (both whole seconds).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import sys
import time
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
from tools.progress import Follow, duration, line

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


def wait_for_manifest(
    reader: JobReader, *, poll_s: float = 5.0, timeout_s: float | None = None, stream=None, sleep=time.sleep
) -> dict:
    """The job's manifest once an agent has expanded the job (saying once that it waits); TimeoutError after
    `timeout_s`. Whether it is a prefix or a dataset job is known only from it."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    told = False
    while True:
        try:
            return reader.read_manifest()
        except JobNotFound as exc:
            if not told:
                (stream or sys.stderr).write(f"waiting: {exc}\n")
                told = True
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {reader.job_id} has no manifest after {timeout_s:.0f} s")
        sleep(poll_s)


def wait(
    reader: JobReader | ShardJobReader,
    *,
    run: str | None = None,
    poll_s: float = 5.0,
    timeout_s: float | None = None,
    stream=None,
    sleep=time.sleep,
) -> JobState | ShardState:
    """Redraw the job's bar until its summary is written (a job of the one engine: the summary of `run`, default the
    newest run); TimeoutError after `timeout_s`. A prefix or URI-list job's bar counts its images, a dataset job's
    its shards (a SHARDS job's images are learnt shard by shard)."""
    if isinstance(reader, ShardJobReader):
        started = time.monotonic()
        manifest = wait_for_manifest(reader.jobs, poll_s=poll_s, timeout_s=timeout_s, stream=stream, sleep=sleep)
        left = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - started))
        images = manifest.get("kind") == "images"
        return follow(
            reader,
            f"job {reader.job_id}" if images else f"job {reader.job_id} shards",
            (lambda s: (s.images_ok, s.images_errors, s.images_total))
            if images
            else (lambda s: (s.done, s.failed, s.shards)),
            lambda state: state.complete and (run is None or state.run == run),
            poll_s=poll_s,
            timeout_s=left,
            stream=stream,
            sleep=sleep,
            unit="img" if images else "shard",
        )
    return follow(
        reader,
        f"job {reader.job_id}",
        lambda state: (state.done, state.failed, state.total),
        lambda state: state.complete,
        poll_s=poll_s,
        timeout_s=timeout_s,
        stream=stream,
        sleep=sleep,
    )


def follow(
    reader, title: str, counts, finished, *, poll_s: float, timeout_s: float | None, stream, sleep, unit: str = "img"
):
    """Read the job every `poll_s` and move its bar to `counts(state)` (done, failed, total) until
    `finished(state)`; TimeoutError after `timeout_s`. A job not expanded yet is waited for, said once."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    bar, text, told = Follow(title, stream or sys.stderr, unit=unit), "no manifest yet", False
    try:
        while True:
            try:
                state = reader.read()
            except JobNotFound as exc:  # not expanded yet: an agent has to pick the job message up first
                state = None
                if not told:
                    bar.write(f"waiting: {exc}")
                    told = True
            if state is not None:
                text = bar.show(*counts(state))
                if finished(state):
                    return state
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {reader.job_id} not complete after {timeout_s:.0f} s: {text}")
            sleep(poll_s)
    finally:
        bar.close()


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


def _images_bar(state: ShardState, rate: float | None) -> str:
    """A prefix or URI-list job's images as one bar line: finished / total, failures, rate."""
    label = f"job {state.job_id}"
    return line(state.images_ok, state.images_total, failed=state.images_errors, rate=rate, label=label)


def render(state: JobState | ShardState, cost: str | None = None) -> str:
    """The job's lines for `make status JOB=<id>`: one bar line for a prefix job, shards and images for a dataset
    job (with `cost`, when given)."""
    if isinstance(state, JobState):
        return line(
            state.done, state.total, failed=state.failed, rate=state.rate_since_created(), label=f"job {state.job_id}"
        )
    rate, eta = state.images_per_s(), state.eta_s()
    images = f"{state.images_ok:,} captioned, {state.images_errors:,} with errors"
    if state.images_total is not None:
        images += f" (of {state.images_total:,})"
    pace = f"; {rate:.1f} images/s over this run" if rate is not None else "; no shard of this run finished yet"
    when = "complete" if state.complete else ("ETA -" if eta is None else f"ETA {duration(eta)}")
    rows = [
        f"job {state.job_id} ({state.kind} of {state.source}): run {state.run or '-'} queued {state.queued_at or '-'}",
        *(
            [
                line(
                    state.images_ok,
                    state.images_total,
                    failed=state.images_errors,
                    rate=rate,
                    label=f"job {state.job_id}",
                )
            ]
            if state.kind == "images"
            else []
        ),
        f"{'parts ' if state.kind == 'images' else 'shards'}  {state.done + state.failed}/{state.shards} finished: "
        f"{state.done} done ({state.error_shards} with {'error records' if state.kind == 'images' else 'error rows'}), "
        f"{state.failed} failed, {state.in_flight} in flight, {state.waiting} waiting",
        f"images  {images}{pace}; {when}",
    ]
    if cost:
        rows.append(f"cost    {cost}")
    if state.complete:
        rows.append(f"summary {state.summary_uri}")
    return "\n".join(rows)
