"""One part of any job on the worker: read it from the job's manifest, stream its samples, caption them, write.

The part message names (job, index, count, run); the part itself is entry `index` of the job's manifest, which
only agents write: a dataset shard, or a part file of image URIs (a MANIFEST, prefix or URI-list job). Samples
stream from S3 (a tar's body, a Parquet file's ranged reads, or one GET per listed key) on a reader thread, are
decoded on the pool ahead of the device, and captioned in device batches. Only the rows (strings) stay in memory.

The output side is the job kind's (`write_output`): a prefix or URI-list job writes each image's result JSON at its
key (runtime.agent.results), a dataset job one Parquet file rendered at the end and put in one request. The marker
comes after the output: a crash anywhere leaves the part to be redone whole, and the redelivery writes the same
bytes again. `shards/<i>.parquet` exists exactly when the shard's marker says done (a failed shard deletes an
earlier run's file before its marker).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, ContextManager

from runtime.agent import ledger, results
from runtime.agent.config import AgentConfig
from runtime.agent.layout import job_root, result_key, results_location_uri, shard_output, started_marker
from runtime.agent.messages import parse_s3_uri
from runtime.agent.metrics import log
from runtime.agent.parts import output
from runtime.agent.parts.feed import Feed, Ready, Source, sources
from runtime.agent.scope import Scope
from runtime.agent.settle import DONE, REFUSE, RELEASE, RETRY
from runtime.agent.work import Captioner, Message, ShardRef, Work
from runtime.aws import GONE_CODES, PERMANENT, RetryLater, classify_read_error, error_code
from runtime.errors import Replaced, UnknownMessage
from runtime.untrusted.samples import ShardError


@dataclasses.dataclass
class Progress:
    """What a shard did so far (the worker turns it into log lines, metrics and counters)."""

    samples: int = 0
    ok: int = 0
    errors: int = 0
    device_s: float = 0.0
    device_calls: int = 0


@dataclasses.dataclass
class ShardContext:
    """What `process_shard` needs of the worker: clients, settings, the model, and its hooks."""

    s3: Any
    config: AgentConfig
    model: Captioner
    manifests: ledger.Manifests
    pool: Any  # an Executor: downloads and decoding, ahead of the device
    on_device: Callable[[list[str]], ContextManager]  # around each device call: the crash journal, the watchdog
    stopping: Any  # a threading.Event: set, the shard stops at the next device batch and its message is released
    progress: Callable[[Progress], None] = lambda _progress: None  # after every device batch


@dataclasses.dataclass
class Outcome:
    """What to do with a shard message and why: DONE delete it, RETRY send it back after a delay, REFUSE dead-letter
    it, RELEASE make it visible again at once (the worker is stopping)."""

    action: str
    reason: str = ""
    progress: Progress = dataclasses.field(default_factory=Progress)
    marker: dict | None = None
    seconds: float = 0.0


class _Stopped(Exception):
    """The worker is stopping: the shard is left for another agent to redo whole."""


def process_shard(context: ShardContext, message: Message, work: Work) -> Outcome:
    """Caption shard `work.shard` whole and write its output and marker; the Outcome says how to settle `message`."""
    ref, started = work.shard, time.monotonic()
    try:
        manifest = _manifest(context, ref)
        entry = manifest["shards"][ref.index]
    except UnknownMessage as exc:
        return Outcome(REFUSE, str(exc))
    except RetryLater as exc:
        return Outcome(RETRY, str(exc))
    config, s3 = context.config, context.s3
    try:
        closed = ledger.finished(s3, config, ref)
        queued = None if closed else ledger.read_queued(s3, config, ref.job_id, ref.run, context.manifests)
    except Exception as exc:  # noqa: BLE001 - S3 trouble before any work: the message comes back
        return Outcome(RETRY, f"reading run {ref.run} of job {ref.job_id}: {exc.__class__.__name__}: {exc}")
    if closed:
        return Outcome(DONE, closed)
    if not isinstance(queued, dict) or ref.index not in queued.get("indexes", ()):
        # the expanding agent writes queued.json before it sends a message of the run: this one was not sent by it
        return Outcome(REFUSE, f"part {ref.index} of job {ref.job_id}: run {ref.run} did not queue it")
    suspect = message.receive_count > 1 and _started_before(s3, config, ref)
    try:
        ledger.start_shard(s3, config, ref, config.agent_name)
    except Exception as exc:  # noqa: BLE001 - S3 trouble before any work: the message comes back
        return Outcome(RETRY, f"marking shard {ref.index} of job {ref.job_id} started: {exc.__class__.__name__}: {exc}")
    started_at, progress = ledger.now(), Progress()
    try:
        rows, reads = _caption(context, manifest, entry, ref, suspect, progress)
    except _Stopped:
        return Outcome(RELEASE, "the worker is stopping: the shard is left for another agent", progress)
    except ShardError as exc:
        return _finish(context, ref, manifest, None, [], progress, started, started_at, str(exc))
    except RetryLater as exc:
        return Outcome(RETRY, str(exc), progress, seconds=time.monotonic() - started)
    return _finish(context, ref, manifest, rows, reads, progress, started, started_at, None)


def _manifest(context: ShardContext, ref: ShardRef) -> dict:
    """The job's manifest, checked against the message (a forged or stale shard message is refused)."""
    manifest = ledger.read_manifest(context.s3, context.config, ref.job_id, context.manifests)
    shards, named = manifest["shards"], f"shard {ref.job_id}/{ref.index} (count {ref.count}, run {ref.run})"
    if len(shards) != ref.count:
        raise UnknownMessage(f"{named}: the job's manifest has {len(shards)} shards, not {ref.count}")
    if not 0 <= ref.index < len(shards) or not isinstance(shards[ref.index], dict):
        raise UnknownMessage(f"{named}: the job's manifest has no shard {ref.index}")
    return manifest


def _started_before(s3, config: AgentConfig, ref: ShardRef) -> bool:
    """True when this run of the shard was started before (a crash may have ended it): caption it image by image.

    A message merely released unstarted (another shard message held the agent) comes back without that cost.
    """
    key = started_marker(job_root(config, ref.job_id), ref.index)
    try:
        body = s3.get_object(Bucket=config.results_bucket_name, Key=key)["Body"].read(64 * 1024)
    except Exception as exc:  # noqa: BLE001 - unknown: the careful answer
        return error_code(exc) not in GONE_CODES
    try:
        return json.loads(body).get("run") == ref.run
    except (ValueError, AttributeError):
        return True


def _caption(
    context: ShardContext, manifest: dict, entry: dict, ref: ShardRef, suspect: bool, progress: Progress
) -> tuple[list[output.Row], list[dict | None]]:
    """Every sample's row, in shard order, and how each listed image's GET found it (None for a shard's samples);
    ShardError when the shard cannot be read, RetryLater for transient."""
    config, model = context.config, context.model
    source = Source(
        s3=context.s3,
        config=config,
        scope=Scope.of(config),
        root=job_root(config, ref.job_id),
        index=ref.index,
        entry=entry,
        manifest=manifest,
        model=model,
        settings=ledger.settings_fingerprint(model, config),
        suspect=suspect,
    )
    size = 1 if suspect else max(1, min(config.batch_size, getattr(model, "max_batch", config.batch_size)))
    rows, reads, group = [], [], []
    try:
        with Feed(sources(source), context.pool, window=2 * size) as feed:
            for ready in feed:
                rows.append(ready.row)
                reads.append(ready.read)
                if ready.image is not None:
                    group.append(ready)
                else:
                    progress.errors += 1
                if len(group) >= size:
                    _device_batch(context, group, progress)
                    group = []
                progress.samples = len(rows)
                if len(rows) % 64 == 0:  # reading is progress too (a run of samples without images)
                    _check_stopping(context)
                    context.progress(progress)
            _device_batch(context, group, progress)
    except (ShardError, RetryLater, _Stopped):
        raise
    except Exception as exc:  # noqa: BLE001 - an S3 read of the shard: gone or denied fails it, others retry
        classified = classify_read_error(exc, entry.get("uri", "the shard"))
        if isinstance(classified, PERMANENT):
            raise ShardError(str(classified)) from exc
        if isinstance(classified, Replaced):
            raise RetryLater(
                f"{entry.get('uri', 'the shard')} was replaced while it was read; the shard is read again whole"
            ) from exc
        raise RetryLater(str(classified)) from exc
    progress.samples = len(rows)
    return rows, reads


def _check_stopping(context: ShardContext) -> None:
    if context.stopping.is_set():
        raise _Stopped()


def _device_batch(context: ShardContext, group: list[Ready], progress: Progress) -> None:
    """Caption `group` in one device call; when it fails, image by image; an image that still fails is an error."""
    if not group:
        return
    _check_stopping(context)
    model, started = context.model, time.monotonic()
    try:
        pixels = model.preprocess([ready.image for ready in group])
        with context.on_device([ready.row.uri for ready in group]):
            texts = model.caption_pixels(pixels)
        for ready, text in zip(group, texts, strict=True):
            ready.row.caption = text
        progress.device_calls += 1
    except Exception as exc:  # noqa: BLE001 - find the image that fails, spare the others
        log("error", event="batch_caption_failed", reason=f"{exc.__class__.__name__}: {exc}", images=len(group))
        for ready in group:
            ready.row.caption = None
            try:
                with context.on_device([ready.row.uri]):
                    ready.row.caption = model.caption([ready.image])[0]
            except Exception as one:  # noqa: BLE001 - this sample's own error row
                ready.row.error = f"captioning failed: {one.__class__.__name__}: {one}"[:1000]
            progress.device_calls += 1
    for ready in group:
        ready.image = None
    progress.device_s += time.monotonic() - started
    ok = sum(1 for ready in group if ready.row.caption is not None)
    progress.ok, progress.errors = progress.ok + ok, progress.errors + len(group) - ok
    context.progress(progress)


def _finish(
    context: ShardContext,
    ref: ShardRef,
    manifest: dict,
    rows: list[output.Row] | None,
    reads: list[dict | None],
    progress: Progress,
    started: float,
    started_at: str,
    error: str | None,
) -> Outcome:
    """Write the output (or delete a stale one, for a failed shard), then the marker; RETRY when S3 says no."""
    config, s3, model = context.config, context.s3, context.model
    entry, images_job = manifest["shards"][ref.index], manifest.get("kind") == "images"
    bucket, key = config.results_bucket_name, shard_output(job_root(config, ref.job_id), ref.index)
    errors = [{"uri": row.uri, "error": row.error} for row in rows or () if row.error is not None]
    marker = {
        "index": ref.index,
        "shard": entry.get("uri"),
        "run": ref.run,
        "status": "failed" if error else "done",
        "samples": progress.samples if rows is not None else 0,
        "ok": progress.ok if rows is not None else 0,
        "errors": progress.errors if rows is not None else 0,
        "error": error,
        "error_images": errors[: ledger.MAX_LISTED],
        "model": model.name,
        "model_sha256": model.sha256,
        "settings": ledger.settings_fingerprint(model, config),
        "output": None if error else results_location_uri(config) if images_job else f"s3://{bucket}/{key}",
        "started_at": started_at,
    }
    try:
        if closed := ledger.finished(s3, config, ref):  # another agent finished the run while this one captioned
            return Outcome(DONE, closed, progress, seconds=time.monotonic() - started)
        if images_job:
            write_results(context, rows or [], reads)
        elif rows is None:
            s3.delete_object(Bucket=bucket, Key=key)
        else:
            s3.put_object(Bucket=bucket, Key=key, Body=output.render(rows), ContentType=output.CONTENT_TYPE)
        seconds = time.monotonic() - started
        marker.update(finished_at=ledger.now(), seconds=round(seconds, 3))
        ledger.finish_shard(s3, config, ref, marker, context.manifests)
    except Exception as exc:  # noqa: BLE001 - the message comes back; the output is rewritten identically
        return Outcome(
            RETRY,
            f"writing part {ref.index} of job {ref.job_id}: {exc.__class__.__name__}: {exc}",
            progress,
            seconds=time.monotonic() - started,
        )
    return Outcome(DONE, error or "", progress, marker, seconds)


def write_results(context: ShardContext, rows: list[output.Row], reads: list[dict | None]) -> None:
    """A prefix or URI-list job's output: each image's result record (or error record) at its key, on the pool.

    A job image has no event eTag to hold it to: its record says which bytes it read (etag, version, size). A row
    whose URI is not an object in the images scope (only a damaged part file holds one) has no result key of its
    own, so it writes none: its error stays in the part's marker, never over another image's result."""
    config, model, scope = context.config, context.model, Scope.of(context.config)

    def write(row: output.Row, read: dict | None) -> None:
        try:
            bucket, key = parse_s3_uri(row.uri)
        except ValueError:
            return
        if key != row.key or scope.outside(bucket, key):
            return
        body = results.render_source(bucket, row.key, read or {}, row.caption, row.error, model)
        results.write(context.s3, config.results_bucket_name, result_key(config.results_prefix, row.key), body)

    list(context.pool.map(write, rows, reads))
