"""One image batch, received to settled: refuse the unreadable, caption on the device, write results, settle."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from typing import Callable, ContextManager

from runtime.agent import results
from runtime.agent.config import AgentConfig
from runtime.agent.layout import result_key
from runtime.agent.metrics import batch_metrics, log
from runtime.agent.model.capture import decode_path
from runtime.agent.settle import Settle
from runtime.agent.work import Batch, Captioner, Item, Message


def _no_journal(_uris):
    return contextlib.nullcontext()


class ImageBatch:
    """Owns one received batch of S3 events' images until every message in it is settled.

    `run` is the whole story, in the order the work happens; each step below it is one method. Job messages and
    their part messages have handlers of their own (runtime.agent.expand, runtime.agent.parts.run).
    """

    def __init__(
        self,
        batch: Batch,
        model: Captioner,
        *,
        s3,
        config: AgentConfig,
        settle: Settle,
        writers: concurrent.futures.Executor,
        preprocess: Callable[[Batch, Captioner], None],
        on_device: Callable[[list[str]], ContextManager] = _no_journal,
        ready_at: float = 0.0,
    ):
        self.batch, self.model, self.s3, self.config, self.settle = batch, model, s3, config, settle
        self.writers, self._preprocess, self.on_device, self.ready_at = writers, preprocess, on_device, ready_at

    def run(self) -> None:
        """Refuse, caption, write, settle, log. A bug sends the batch's held messages back, never kills the agent."""
        started = time.monotonic()
        try:
            self.refuse_unknown()
            self.preprocess()
            device_s = self.caption()
            self.write_results()
            done, retry = self.outcomes()
            self.settle.done(done)
            for message, reason in retry:
                self.settle.retry([message], reason)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the fleet: retry the batch later
            log("error", exc_info=True, event="batch_crashed", reason=f"{exc.__class__.__name__}: {exc}")
            self.settle.retry(self.settle.held(self.batch.messages), str(exc))
            return
        settled = {"deleted": len(done), "retried": len(retry), "refused": len(self.batch.unknown)}
        self.log(settled, device_s, time.monotonic() - started)

    def refuse_unknown(self) -> None:
        """Dead-letter each body that could not be read, alone; log the messages that asked for nothing."""
        for message, reason in self.batch.unknown:
            self.settle.dead_letter(message, reason)
        for message in self.batch.messages:
            note = self.batch.work[message.id].note if message.id in self.batch.work else ""
            if note:
                log("info", event="skipped", message_id=message.id, note=note)

    def preprocess(self) -> None:
        """Pixels for the model in use (the prefetcher made them for the model before a swap, if any)."""
        if self.batch.preprocessed_by is not self.model:
            self._preprocess(self.batch, self.model)

    def caption(self) -> float:
        """Caption every decoded image; when a device batch fails, retry its images one by one. Seconds taken.

        `on_device(uris)` is a context manager around each device call (the crash journal, the liveness mark).
        """
        started = time.monotonic()
        for group, pixels in zip(self.batch.groups, self.batch.pixels):
            try:
                if pixels is None:
                    raise ValueError("preprocessing the batch failed")
                with self.on_device([item.ref.uri for item in group]):
                    texts = self.model.caption_pixels(pixels)
                for item, text in zip(group, texts, strict=True):
                    item.caption = text
            except Exception as exc:  # noqa: BLE001 - find the image that fails, spare the others
                log("error", event="batch_caption_failed", reason=f"{exc.__class__.__name__}: {exc}", images=len(group))
                for item in group:
                    try:
                        with self.on_device([item.ref.uri]):
                            item.caption = self.model.caption([item.image])[0]
                    except Exception as one:  # noqa: BLE001 - that message goes back to the queue
                        item.retry = f"captioning failed: {one.__class__.__name__}: {one}"
        for item in self.batch.items:
            item.image = None
        return time.monotonic() - started

    def write_results(self) -> None:
        """Write the result (or error record) of every finished image, in parallel on the writers' pool."""
        list(self.writers.map(self._write, self.batch.items))

    def _write(self, item: Item) -> None:
        if item.retry is not None or item.skipped is not None:
            return
        key = result_key(self.config.results_prefix, item.ref.key)
        try:
            if item.ref.etag and item.error is None and results.replaced_since(self.s3, item.ref, item.etag):
                item.skipped = f"{item.ref.uri}: replaced while it was captioned; the newer upload's event captions it"
                return
            results.write(self.s3, self.config.results_bucket_name, key, results.render(item, self.model))
        except Exception as exc:  # noqa: BLE001 - RetryLater: the message goes back
            item.retry = str(exc)

    def outcomes(self) -> tuple[list[Message], list[tuple[Message, str]]]:
        """(messages to delete, (message, reason) to retry): a message is done when every image of it has its
        record written."""
        done, retry = [], []
        for message in self.batch.messages:
            work = self.batch.work.get(message.id)
            if work is None:
                continue  # an unknown body, already dead-lettered
            items = [item for item in self.batch.items if item.message is message]
            failure = next((item.retry for item in items if item.retry), None)
            if failure:
                retry.append((message, failure))
            else:
                done.append(message)
        return done, retry

    def log(self, settled: dict, device_s: float, total_s: float) -> None:
        """The batch's log line (with its embedded metrics) and the agent's counters."""
        batch, counters = self.batch, self.settle.counters
        for item in batch.items:
            if item.skipped:
                log("info", event="skipped", message_id=item.message.id, note=item.skipped)
        finished = [item for item in batch.items if item.retry is None and item.skipped is None]
        failed = sum(1 for item in finished if item.error)
        for item in finished:
            if item.error:
                log("warning", event="image_failed", uri=item.ref.uri, reason=item.error)
        if not counters.done and len(finished) > failed:  # the cold-start budget's last phase
            log(
                "info",
                event="first_caption",
                since_ready_s=round(time.monotonic() - self.ready_at, 3),
                batch_s=round(total_s, 3),
            )
        counters.done += len(finished) - failed
        counters.failed += failed
        now = time.time()
        log(
            "info",
            event="batch",
            messages=len(batch.messages),
            images=len(batch.items),
            failed=failed,
            fetch_s=round(batch.fetch_s, 3),
            device_s=round(device_s, 3),
            total_s=round(total_s, 3),
            model=self.model.sha256[:12],
            decode=decode_path(self.model),
            **settled,
            totals=counters.as_dict(),
            **batch_metrics(
                self.config,
                messages=len(batch.messages),
                message_images=len(batch.items),
                done=len(finished) - failed,
                failed=failed,
                size=len(batch.items),
                device_s=device_s,
                latencies_s=[now - i.message.received_at for i in finished],
                waits_s=[max(0.0, m.received_at - m.sent_at) for m in batch.messages],
            ),
        )
