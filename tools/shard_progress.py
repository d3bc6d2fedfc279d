"""A dataset job's progress from its folder (runtime.agent.layout): shards done / failed / in flight / waiting,
images and images/s over the current run, its ETA, and waiting for the run's summary.

The folder is written only by agents, so it is trusted as the proof of a shard. Markers are re-read only when their
ETag changes (a retry overwrites them); whether a shard is in flight comes from listing times alone: its started
marker is no older than the run's queued.json and than its own marker (both whole seconds).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import time

from runtime.agent.layout import JOB_CHUNKS, JOB_RUNS, JOB_STARTED, JOB_SUMMARY, RUN_QUEUED, run_root
from tools.job_progress import JobNotFound, JobReader, follow
from tools.progress import duration


def _utc(value: str | datetime.datetime) -> datetime.datetime:
    moment = value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


@dataclasses.dataclass
class ShardState:
    """A dataset job as its folder says now; `complete` once the current run's summary is written."""

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
    images_total: int | None  # a MANIFEST job knows it; a SHARDS job learns it shard by shard
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
        return {"job_id": self.job_id, "kind": self.kind, "run": self.run, "shards": self.shards,
                "shards_done": self.done, "shards_failed": self.failed, "in_flight": self.in_flight,
                "waiting": self.waiting, "error_shards": self.error_shards, "done": self.images_ok,
                "errors": self.images_errors, "images_per_s": None if rate is None else round(rate, 2),
                "complete": self.complete, "summary": self.summary_uri}


class ShardJobReader:
    """Reads a dataset job's folder: the manifest once, a marker again only when its ETag changed."""

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
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.root + JOB_RUNS,
                                                                  Delimiter="/")
        runs = [p["Prefix"][len(self.root + JOB_RUNS):-1] for page in pages for p in page.get("CommonPrefixes", [])]
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
        now = now or datetime.datetime.now(datetime.timezone.utc)
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
        flying = {i for i in pending if i in started and (since is None or started[i] >= since)
                  and (i not in written or started[i] >= written[i])}
        finished = [m for m in markers.values() if m.get("run") == run]
        latest = [m for i, m in markers.items() if i not in pending]
        summary = self.summary()
        complete = summary is not None and summary.get("run") == run and run is not None
        end = _utc(summary["finished_at"]) if complete and summary.get("finished_at") else now
        return ShardState(
            job_id=self.job_id, kind=manifest.get("kind", "?"), source=manifest.get("source", "?"),
            shards=len(manifest["shards"]), run=run, queued_at=queued.get("created_at"),
            done=sum(m["status"] == "done" for m in latest), failed=sum(m["status"] == "failed" for m in latest),
            in_flight=len(flying), waiting=len(manifest["shards"]) - len(latest) - len(flying),
            error_shards=sum(m["status"] == "done" and m.get("errors", 0) > 0 for m in latest),
            images_ok=sum(m.get("ok", 0) for m in latest), images_errors=sum(m.get("errors", 0) for m in latest),
            images_total=manifest.get("images"), run_shards=len(queued.get("indexes", [])),
            run_finished=len(finished), run_samples=sum(m.get("samples", 0) for m in finished),
            elapsed_s=max(0.0, (end - begun).total_seconds()) if begun else 0.0, complete=complete,
            summary_uri=f"s3://{self.bucket}/{self.root}{JOB_SUMMARY}")


def render(state: ShardState, cost: str | None = None) -> str:
    """The dataset job's lines for `make status JOB=<id>`."""
    rate, eta = state.images_per_s(), state.eta_s()
    images = f"{state.images_ok:,} captioned, {state.images_errors:,} with errors"
    if state.images_total is not None:
        images += f" (of {state.images_total:,})"
    pace = (f"; {rate:.1f} images/s over this run" if rate is not None else "; no shard of this run finished yet")
    when = "complete" if state.complete else ("ETA -" if eta is None else f"ETA {duration(eta)}")
    rows = [
        f"job {state.job_id} ({state.kind} of {state.source}): run {state.run or '-'} queued {state.queued_at or '-'}",
        f"shards  {state.done + state.failed}/{state.shards} finished: {state.done} done ({state.error_shards} with "
        f"error rows), {state.failed} failed, {state.in_flight} in flight, {state.waiting} waiting",
        f"images  {images}{pace}; {when}",
    ]
    if cost:
        rows.append(f"cost    {cost}")
    if state.complete:
        rows.append(f"summary {state.summary_uri}")
    return "\n".join(rows)


def wait(reader: ShardJobReader, *, run: str | None = None, poll_s: float = 5.0, timeout_s: float | None = None,
         stream=None, sleep=time.sleep) -> ShardState:
    """Redraw the job's shard bar until the summary of `run` (default: the newest run) is written."""
    return follow(reader, f"job {reader.job_id} shards", lambda state: (state.done, state.failed, state.shards),
                  lambda state: state.complete and (run is None or state.run == run), poll_s=poll_s,
                  timeout_s=timeout_s, stream=stream, sleep=sleep, unit="shard")
