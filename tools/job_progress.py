"""A job's progress drawn from its folder (tools.job_folder reads it), every kind of job: `make status JOB=` and
`submit --wait`. `render` and `wait` take either reader's state: a job of the one job engine (parts, images, ETA) or
a prefix job expanded before it (chunk markers)."""

from __future__ import annotations

import sys
import time

from tools.job_folder import JobNotFound, JobReader, JobState, ShardJobReader, ShardState
from tools.progress import Follow, duration, line


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
