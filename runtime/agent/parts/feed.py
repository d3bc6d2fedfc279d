"""A shard's samples, read on a thread and decoded on the pool a bounded window ahead of the device, in order.

`sources` turns a manifest entry into per-sample tasks: a tar streams its GET body through `tar.iter_samples`, a
Parquet file is read by ranged GETs (`parquet.RangedFile`), a part of a MANIFEST job GETs each listed image (on the
pool, bounded by `max_image_bytes`). Each task hashes the bytes and decodes them (`load_image`, `max_pixels`); a
sample that cannot be used becomes an error row there. `Feed` keeps at most `window` tasks in flight, so the shard's
bytes in memory are the device batch in hand and the next one, never the shard.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import queue
import threading
from typing import Any, Callable, Iterator

from runtime.agent import crashes
from runtime.agent.config import AgentConfig
from runtime.agent.layout import MAX_KEY_BYTES, part_key
from runtime.agent.messages import parse_s3_uri
from runtime.agent.parts import output
from runtime.agent.scope import Scope
from runtime.aws import PERMANENT, RetryLater, classify_read_error
from runtime.images import load_image
from runtime.untrusted import parquet, tar
from runtime.untrusted.samples import Sample, ShardError

_END = object()


@dataclasses.dataclass
class Ready:
    """One sample's row (caption still to come) and its decoded image (None: the row is an error already)."""

    row: output.Row
    image: Any = None
    read: dict | None = None  # how a listed image's GET found it (version_id, etag, size), for its result record


@dataclasses.dataclass(frozen=True)
class Source:
    """One shard to read: its manifest entry and what its rows are stamped with."""

    s3: Any
    config: AgentConfig
    scope: Scope
    root: str  # the job's folder in the results bucket
    index: int
    entry: dict  # {"uri", "format", "size"} from the manifest
    manifest: dict
    model: Any
    settings: str
    suspect: bool  # redelivered after a start: consult each sample's crash count

    def row(self, key: str, index: int, uri: str) -> output.Row:
        return output.Row(
            key=key,
            uri=uri,
            shard=self.entry["uri"],
            index=index,
            image_sha256=None,
            caption=None,
            error=None,
            model=self.model.name,
            model_sha256=self.model.sha256,
            settings=self.settings,
            prompt_sha256=getattr(self.model, "prompt_sha256", None),
        )


def sources(source: Source) -> Iterator[Callable[[], Ready]]:
    """The shard's samples as tasks, in shard order; ShardError when the entry names nothing this agent reads."""
    uri, kind = source.entry.get("uri"), source.entry.get("format")
    try:
        bucket, key = parse_s3_uri(uri)
    except ValueError as exc:
        raise ShardError(f"shard {source.index}: {exc}") from None
    if kind == "keys":
        expected = part_key(source.root, source.index)
        if (bucket, key) != (source.config.results_bucket_name, expected):
            raise ShardError(f"shard {source.index}: {uri} is not this job's part file {expected}")
        return _listed(source, bucket, key)
    why = source.scope.dataset_outside(bucket, key)
    if why:
        raise ShardError(f"shard {source.index}: {why}")
    if kind == "tar":
        return _in_tar(source, bucket, key)
    if kind == "parquet":
        return _in_parquet(source, bucket, key)
    raise ShardError(f"shard {source.index}: unknown format {kind!r}; expected tar, parquet or keys")


def _in_tar(source: Source, bucket: str, key: str) -> Iterator[Callable[[], Ready]]:
    body = source.s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        for sample in tar.iter_samples(
            body, max_member_bytes=source.config.max_image_bytes, max_samples=source.config.max_shard_samples
        ):
            yield functools.partial(_decode, source, sample, f"s3://{bucket}/{key}#{sample.key}")
    finally:
        body.close()


def _in_parquet(source: Source, bucket: str, key: str) -> Iterator[Callable[[], Ready]]:
    # A Parquet shard is many ranged GETs: each is pinned (IfMatch) to the object as this read found it, so a shard
    # replaced mid-read fails with PreconditionFailed and is read again whole, never as old footer over new bytes.
    # The size comes from the same HEAD, not the manifest, so a shard fixed and retried is read as it is now.
    head = source.s3.head_object(Bucket=bucket, Key=key)
    file = parquet.RangedFile(source.s3, bucket, key, int(head["ContentLength"]), etag=head.get("ETag"))
    manifest = source.manifest
    for sample in parquet.iter_samples(
        file,
        image_column=manifest.get("image_column"),
        key_column=manifest.get("key_column"),
        max_member_bytes=source.config.max_image_bytes,
        max_samples=source.config.max_shard_samples,
    ):
        yield functools.partial(_decode, source, sample, f"s3://{bucket}/{key}#{sample.key}")


def _listed(source: Source, bucket: str, key: str) -> Iterator[Callable[[], Ready]]:
    # the part's own count (the manifest is agents' writing) or today's setting, whichever is larger: a setting
    # lowered while a job is in flight does not fail the parts cut before
    size = max(source.config.part_size(source.manifest.get("kind", "keys")), int(source.entry.get("size") or 0))
    limit = 4096 + min(size, source.config.max_shard_samples) * 6 * (MAX_KEY_BYTES + 64)  # every URI JSON-escaped
    reply = source.s3.get_object(Bucket=bucket, Key=key)
    if int(reply.get("ContentLength") or 0) > limit:
        reply["Body"].close()
        raise ShardError(f"shard {source.index}: its part file is over {limit:,} bytes")
    images = json.loads(reply["Body"].read(limit + 1)).get("images")
    if not isinstance(images, list) or len(images) > source.config.max_shard_samples:
        raise ShardError(f"shard {source.index}: its part file has no list of images (or over max_shard_samples)")
    for index, uri in enumerate(images):
        yield functools.partial(_fetch, source, index, uri)


def _fetch(source: Source, index: int, uri) -> Ready:
    """GET one listed image (its size bounded), then decode it; RetryLater on transient S3 trouble."""
    config = source.config
    try:
        bucket, key = parse_s3_uri(uri)
    except ValueError as exc:
        return _failed(source.row(str(uri)[:MAX_KEY_BYTES], index, str(uri)[:MAX_KEY_BYTES]), str(exc))
    row = source.row(key, index, uri)
    images_job = source.manifest.get("kind") == "images"  # its URIs came from the images scope; they stay in it
    why = (source.scope.outside if images_job else source.scope.dataset_outside)(bucket, key)
    if why:
        return _failed(row, why)
    try:
        reply = source.s3.get_object(Bucket=bucket, Key=key)
        size = int(reply.get("ContentLength") or 0)
        if size > config.max_image_bytes:
            reply["Body"].close()
            return _failed(
                row,
                f"{uri}: the object is {size:,} bytes, over the limit of {config.max_image_bytes:,} "
                f"(max_image_bytes); shrink it or raise the limit",
            )
        data = reply["Body"].read(config.max_image_bytes + 1)
        etag = reply.get("ETag", "").strip('"') or None
    except Exception as exc:  # noqa: BLE001 - gone or denied: this sample's error; anything else: retry the shard
        classified = classify_read_error(exc, uri)
        if isinstance(classified, RetryLater):
            raise classified from exc
        return _failed(row, str(classified))
    if len(data) > config.max_image_bytes:
        return _failed(row, f"{uri}: the object is over the limit of {config.max_image_bytes:,} bytes")
    ready = _decode(source, Sample(key, index, data), uri, row)
    ready.read = {"version_id": reply.get("VersionId"), "etag": etag, "size": size}
    return ready


def _decode(source: Source, sample: Sample, uri: str, row: output.Row | None = None) -> Ready:
    row = row or source.row(sample.key, sample.index, uri)
    if sample.data is None:
        return _failed(row, sample.error or "the sample has no image")
    row.image_sha256 = hashlib.sha256(sample.data).hexdigest()
    if source.suspect:
        try:
            count = crashes.crash_count(source.s3, source.config, uri)
        except Exception as exc:  # noqa: BLE001 - the count cannot be read now: the shard comes back later
            raise RetryLater(f"{uri}: reading its crash count: {exc.__class__.__name__}: {exc}") from exc
        if count >= source.config.crash_limit:
            return _failed(row, crashes.crashed_reason(uri, count))
    try:
        return Ready(row, load_image(sample.data, max_pixels=source.config.max_pixels))
    except PERMANENT as exc:
        return _failed(row, str(exc).removeprefix("image bytes: "))
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: whatever the decoder raises is this sample's error
        return _failed(row, f"the image could not be decoded: {exc.__class__.__name__}: {str(exc)[:300]}")


def _failed(row: output.Row, error: str) -> Ready:
    row.error = error[:2000]
    return Ready(row)


class Feed:
    """Runs `tasks` (from a reader thread) on `pool`, at most `window` ahead, and yields their results in order.

    What the reader raises (ShardError, an S3 error mid-stream) is raised by the iteration, after the samples
    before it.
    """

    def __init__(self, tasks: Iterator[Callable[[], Ready]], pool, window: int):
        self.tasks, self.pool = tasks, pool
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, window))
        self.cancel = threading.Event()
        self.thread = threading.Thread(target=self._read, name="shard-read", daemon=True)

    def __enter__(self) -> Feed:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.cancel.set()
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if hasattr(item, "cancel"):
                item.cancel()
        self.thread.join(10)

    def __iter__(self) -> Iterator[Ready]:
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item.result()

    def _read(self) -> None:
        try:
            for task in self.tasks:
                if not self._put(self.pool.submit(task)):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the iterating thread, which sorts it
            self._put(exc)
        finally:
            close = getattr(self.tasks, "close", None)
            if close:
                close()

    def _put(self, item) -> bool:
        while not self.cancel.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
