"""A batch job's progress from its files (runtime.agent.layout): done / total / failed, and waiting for the end."""
from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import time

from runtime.errors import CaptionKitError
from runtime.aws import object_exists
from runtime.agent.config import AgentConfig
from runtime.agent.layout import JOB_CHUNKS, JOB_MANIFEST, JOB_SUMMARY, job_root
from runtime.agent.messages import parse_s3_uri
from tools.progress import Follow

# The names inside a job's folder, as runtime/agent/jobs.py writes them (see its module docstring).
MANIFEST, SUMMARY, CHUNKS = JOB_MANIFEST, JOB_SUMMARY, JOB_CHUNKS


class JobNotFound(CaptionKitError, LookupError):
    """No manifest for this job id: not submitted, not expanded yet, or another stack/results prefix."""


@dataclasses.dataclass
class JobState:
    """A job as its files say now; `complete` once the summary is written."""

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
        now = now or datetime.datetime.now(datetime.timezone.utc)
        elapsed = (now - datetime.datetime.fromisoformat(self.created_at)).total_seconds()
        return self.finished / elapsed if elapsed > 0 and self.finished else None


class JobReader:
    """Reads a job's manifest once and its chunk markers as they appear (each read once: markers never change)."""

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
                raise JobNotFound(f"no s3://{self.bucket}/{self.root}{MANIFEST} yet: job {self.job_id!r} was not "
                                  "submitted to this stack, or no agent has picked it up (is the fleet running?)") \
                    from None
        return self.manifest

    def read(self) -> JobState:
        self.read_manifest()
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.root + CHUNKS)
        for key in [o["Key"] for page in pages for o in page.get("Contents", [])]:
            if key not in self.markers:
                self.markers[key] = self._json(key)
        summary = self.root + SUMMARY
        complete = object_exists(self.s3, self.bucket, summary)
        return JobState(self.job_id, len(self.manifest["images"]),
                        sum(m["done"] for m in self.markers.values()),
                        sum(len(m["failed"]) for m in self.markers.values()),
                        complete, self.manifest["created_at"], f"s3://{self.bucket}/{summary}")


def wait_for_manifest(reader: JobReader, *, poll_s: float = 5.0, timeout_s: float | None = None, stream=None,
                      sleep=time.sleep) -> dict:
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


def wait(reader: JobReader, *, poll_s: float = 5.0, timeout_s: float | None = None, stream=None,
         sleep=time.sleep) -> JobState:
    """Redraw the job's bar until its summary is written; TimeoutError after `timeout_s`."""
    return follow(reader, f"job {reader.job_id}", lambda state: (state.done, state.failed, state.total),
                  lambda state: state.complete, poll_s=poll_s, timeout_s=timeout_s, stream=stream, sleep=sleep)


def follow(reader, title: str, counts, finished, *, poll_s: float, timeout_s: float | None, stream, sleep,
           unit: str = "img"):
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
