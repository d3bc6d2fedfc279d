"""Gather the next batch: receive messages, then download, decode and preprocess on worker threads."""

from __future__ import annotations

import concurrent.futures
import time

from runtime.agent import crashes
from runtime.agent.config import AgentConfig
from runtime.agent.messages import UnknownMessage, parse_body
from runtime.agent.queue import Inbox
from runtime.agent.scope import Scope
from runtime.agent.work import Batch, Captioner, Item, Message, Work
from runtime.aws import PERMANENT, Replaced, RetryLater, classify_read_error
from runtime.errors import BadImage
from runtime.images import load_image


class Prefetcher:
    """Builds `Batch`es; `fetch` runs on its own thread while the device works on the previous batch."""

    def __init__(self, inbox: Inbox, s3, config: AgentConfig):
        self.inbox, self.s3, self.config, self.scope = inbox, s3, config, Scope.of(config)
        self.pool = concurrent.futures.ThreadPoolExecutor(config.prefetch_threads, thread_name_prefix="download")
        # after a batch that held shards, receive one message at a time: a shard is a batch's worth of work, and
        # shards received together wait in turn on this agent (releasing them would count receives towards the
        # dead-letter queue's maxReceiveCount without any work done on them)
        self.one_at_a_time = False

    def fetch(self, captioner, wait_s: float, current: bool = False) -> Batch:
        """Receive up to a batch of images (long poll `wait_s`), then make them ready for `captioner` (with
        `current`, a function returning the model in use once the images are in)."""
        started, batch = time.monotonic(), Batch()
        self._add(batch, self.inbox.receive(1 if self.one_at_a_time else self.config.batch_size, wait_s))
        self.one_at_a_time = bool(batch.shard_messages())
        gather_until = time.monotonic() + self.config.batch_wait_s
        while (
            batch.messages
            and len(batch.items) < self.config.batch_size
            and time.monotonic() < gather_until
            and not batch.shard_messages()
        ):  # a shard is a batch's worth of work on its own
            more = self.inbox.receive(self.config.batch_size - len(batch.items), 0)
            if more:
                self._add(batch, more)
            else:
                time.sleep(0.05)
        list(self.pool.map(self._download, batch.items))
        captioner = captioner() if current else captioner  # the model now: a swap may have dropped the old one
        if captioner is not None:
            self.preprocess(batch, captioner)
        batch.fetch_s = time.monotonic() - started
        return batch

    def _add(self, batch: Batch, messages: list[Message]) -> None:
        """Add what `messages` ask for. A shard message has no images: the batch holds it, and the worker runs the
        batch's shards one after another, after its images, keeping the waiting ones visible to no one else."""
        for message in messages:
            work, refused = self._read(message)
            batch.messages.append(message)
            if refused is not None:
                batch.unknown.append((message, refused))
                continue
            batch.work[message.id] = work
            batch.items.extend(Item(ref, message) for ref in work.images)

    def _read(self, message: Message) -> tuple[Work | None, str | None]:
        """(what the message asks for, why it is refused): one of them is None."""
        try:
            return parse_body(message.body, self.scope), None
        except UnknownMessage as exc:
            return None, str(exc)
        except Exception as exc:  # noqa: BLE001 - a body is untrusted: whatever it raises settles it alone
            return None, f"the body could not be read: {exc.__class__.__name__}: {str(exc)[:300]}"

    def _download(self, item: Item) -> None:
        ref = item.ref
        if item.retry is not None:
            return
        try:
            # IfMatch the event's eTag: an object overwritten since the event is skipped, never captioned under the
            # older event (the newer upload has its own event, and the result names the version it read). Events
            # carry it unquoted; sent quoted as RFC 7232 spells an entity tag (S3 compares either form:
            # https://github.com/versity/versitygw/pull/1715, checked against AWS; moto accepts both)
            extra = (
                {"IfMatch": f'"{ref.etag.strip(chr(34))}"'}
                if ref.etag
                else {"VersionId": ref.version_id}
                if ref.version_id
                else {}
            )
            reply = self.s3.get_object(Bucket=ref.bucket, Key=ref.key, **extra)
            item.etag, item.size = reply.get("ETag", "").strip('"') or None, reply.get("ContentLength")
            item.version_id = reply.get("VersionId") or ref.version_id
            if item.size is not None and item.size > self.config.max_image_bytes:
                reply["Body"].close()
                raise BadImage(
                    f"the object is {item.size:,} bytes, over the limit of "
                    f"{self.config.max_image_bytes:,} (max_image_bytes); shrink it or raise the limit"
                )
            data = reply["Body"].read()
            if item.message.receive_count > 1:
                count = crashes.crash_count(self.s3, self.config, ref.uri)
                if count >= self.config.crash_limit:
                    raise BadImage(crashes.crashed_reason(ref.uri, count))
            item.image = load_image(data, max_pixels=self.config.max_pixels)
        except PERMANENT as exc:
            item.error = str(exc).removeprefix("image bytes: ")
        except Exception as exc:  # noqa: BLE001 - sorted into permanent or transient just below
            classified = classify_read_error(exc, ref.uri)
            if isinstance(classified, RetryLater):
                item.retry = str(classified)
            elif isinstance(classified, Replaced):
                item.skipped = str(classified)
            else:
                item.error = str(classified)

    def preprocess(self, batch: Batch, captioner: Captioner) -> None:
        """Split decoded images into device batches and preprocess them for `captioner`."""
        ready = [item for item in batch.items if item.image is not None]
        size = (
            1
            if batch.alone
            else max(1, min(self.config.batch_size, getattr(captioner, "max_batch", self.config.batch_size)))
        )
        batch.groups = [ready[start : start + size] for start in range(0, len(ready), size)]
        batch.pixels = []
        for group in batch.groups:
            try:
                batch.pixels.append(captioner.preprocess([item.image for item in group]))
            except Exception:  # noqa: BLE001 - the worker retries this group image by image
                batch.pixels.append(None)
        batch.preprocessed_by = captioner

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
