"""The worker loop: receive a batch, caption it, write results, settle its messages, repeat."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import time
from typing import Callable

from runtime.agent import crashes, ledger
from runtime.agent.batch import ImageBatch
from runtime.agent.config import AgentConfig
from runtime.agent.expand import JobExpansion
from runtime.agent.metrics import Counters, log
from runtime.agent.model.capture import prepare_decode
from runtime.agent.model.swap import ModelWatcher
from runtime.agent.parts import run
from runtime.agent.parts.report import ShardReport
from runtime.agent.prefetch import Prefetcher
from runtime.agent.queue import Inbox
from runtime.agent.settle import Settle
from runtime.agent.watchdog import Watchdog
from runtime.agent.work import Batch, Captioner, Message, Work

# The drain ran past its bound: the messages in hand went back to the queue. The worker's systemd unit lists
# this code in SuccessExitStatus and RestartPreventExitStatus (stacks/boot/bootstrap.sh): an instance that is
# going away is not restarted, and this is not a failure that makes it give up.
DRAIN_TIMEOUT_EXIT = 75


class Worker:
    """Consumes the queue until stopped, the queue is empty (`burst`) or `max_batches` ran."""

    def __init__(
        self,
        config: AgentConfig,
        captioner: Captioner,
        pointer: dict,
        *,
        sqs,
        s3,
        burst: bool = False,
        max_batches: int | None = None,
        watcher: ModelWatcher | None = None,
        watchdog: Watchdog | None = None,
    ):
        self.config, self.model, self.pointer, self.s3, self.sqs = config, captioner, pointer, s3, sqs
        self.burst, self.max_batches, self.watcher = burst, max_batches, watcher
        self.watchdog = watchdog or Watchdog(config.hold_limit_s)
        self.journal = crashes.Journal(crashes.journal_path(config))
        self.inbox = Inbox(sqs, config.queue_url, config.visibility_timeout_s, config.hold_limit_s)
        self.prefetcher = Prefetcher(self.inbox, s3, config)
        self.manifests = ledger.Manifests()  # the jobs' manifests, read again only when changed (part messages)
        self.counters = Counters()
        self.settle = Settle(self.inbox, self.counters, config.retry_backoff_s)
        self.expansion = JobExpansion(s3=s3, sqs=sqs, config=config, settle=self.settle, progress=self._progress)
        self.ready_at = time.monotonic()
        self.stopping = threading.Event()
        # run once draining is over, even after a forced exit (the lifecycle completion)
        self.on_exit: list[Callable[[], None]] = []
        self._fetcher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fetch")
        self._writers = concurrent.futures.ThreadPoolExecutor(config.prefetch_threads, thread_name_prefix="write")
        self._finished = threading.Event()
        self.force_exit = os._exit  # what the drain bound calls; tests replace it

    def stop(self, reason: str) -> None:
        """Stop taking work, finish the batch in hand within `drain_timeout_s`, then exit."""
        if self.stopping.is_set():
            return
        log("info", event="draining", reason=reason, drain_timeout_s=self.config.drain_timeout_s)
        self.stopping.set()
        threading.Thread(target=self._drain_bound, name="drain-bound", daemon=True).start()

    def run(self) -> int:
        """The loop, on the thread that serves (the only one that captures decode graphs). Returns the exit code: 0
        after a drain, burst end or `max_batches`."""
        prepare_decode(self.config, self.model)
        crashes.recover(self.journal, self.s3, self.config)
        self.inbox.start()
        self.watchdog.start()
        self.watchdog.ready()
        pending = self._fetch_next()
        try:
            while pending is not None:
                future, pending = pending, None
                batch = future.result()
                self.watchdog.mark()
                if self.stopping.is_set():
                    self.inbox.release(batch.messages)  # received but not started: visible again at once
                elif not batch.messages:
                    if not (self.burst and self.inbox.is_empty()):
                        pending = self._fetch_next()
                else:
                    self.counters.batches += 1
                    more = not self.max_batches or self.counters.batches < self.max_batches
                    suspects = batch.suspects()  # held alone: no prefetched batch-mates share a crash
                    shards = batch.shard_messages()  # a shard is long: no batch waits, held, behind it
                    if more and not suspects and not shards:
                        pending = self._fetch_next()  # downloads the next batch while this one runs
                    for part in batch.without(shards).split():
                        if part.messages:
                            self.process(part)
                    for message in shards:
                        self.process_shard(message, batch.work[message.id], waiting=shards)
                    if more and (suspects or shards) and not self.stopping.is_set():
                        pending = self._fetch_next()
        finally:
            self._finish(pending)
        return 0

    def process(self, batch: Batch) -> None:
        """Settle every message of one batch: its S3 events' images as one `ImageBatch`, then each job message by
        `JobExpansion`."""
        try:
            self._swap_model_if_ready(batch)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the fleet: retry the batch later
            log("error", exc_info=True, event="batch_crashed", reason=f"{exc.__class__.__name__}: {exc}")
            self.settle.retry(self.settle.held(batch.messages), str(exc))
            return
        expansions = batch.job_messages()
        images = batch.without(expansions)
        if images.messages:
            ImageBatch(
                images,
                self.model,
                s3=self.s3,
                config=self.config,
                settle=self.settle,
                writers=self._writers,
                preprocess=self.prefetcher.preprocess,
                on_device=self._on_device,
                ready_at=self.ready_at,
            ).run()
        for message in expansions:
            self.expansion.run(message, batch.work[message.id], self.model)

    def process_shard(self, message: Message, work: Work, waiting: list[Message] = ()) -> None:
        """Caption one part of a job whole (runtime.agent.parts.run) and settle its message. Progress restarts
        the hold clock of `waiting` too (the batch's other parts, run next), so none lapses while in line."""
        if self.stopping.is_set():
            self.inbox.release([message])
            return
        report = ShardReport(self.config, self.counters, work.shard)

        def progress(done: run.Progress) -> None:  # a device batch is progress: the hold clocks start again
            self.watchdog.mark()
            now = time.monotonic()
            for held in (message, *waiting):
                held.held_since = now
            report.progress(done)

        try:
            self._swap_model_if_ready(Batch())
            context = run.ShardContext(
                self.s3,
                self.config,
                self.model,
                self.manifests,
                self.prefetcher.pool,
                self._on_device,
                self.stopping,
                progress,
            )
            outcome = run.process_shard(context, message, work)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the fleet: retry the shard later
            log("error", exc_info=True, event="shard_crashed", reason=f"{exc.__class__.__name__}: {exc}")
            self.settle.retry([message], str(exc))
            return
        self.settle.apply(message, outcome.action, outcome.reason)
        report.finish(outcome, message)

    @contextlib.contextmanager
    def _on_device(self, uris: list[str]):
        with self.journal.on_device(uris), self.watchdog.device_call():
            yield

    def _fetch_next(self):
        return self._fetcher.submit(self._fetch, self.config.wait_time_s)

    def _fetch(self, wait_s: float) -> Batch:
        if self.stopping.is_set():
            return Batch()
        try:
            return self.prefetcher.fetch(lambda: self.model, wait_s, current=True)
        except Exception as exc:  # noqa: BLE001 - SQS trouble past botocore's retries: pause, poll again
            log("error", event="receive_failed", reason=f"{exc.__class__.__name__}: {exc}")
            self.stopping.wait(min(30.0, max(1.0, wait_s)))
            if self.burst:
                raise
            return Batch()

    def _swap_model_if_ready(self, batch: Batch) -> None:
        deferred = self.watcher.take_deferred() if self.watcher else None
        if deferred:
            old = self.model.sha256

            def drop():  # no reference to the old model may stay, or its memory is not freed
                self.model, batch.preprocessed_by, batch.pixels = None, None, []

            self.model, self.pointer = self.watcher.swap_now(deferred, self.pointer, drop)
            if self.model is None:
                log("error", event="fatal", reason="neither the new nor the old model loads after a swap")
                self.force_exit(1)
            status = prepare_decode(self.config, self.model)
            log(
                "info",
                event="model_swapped",
                old=old,
                new=self.model.sha256,
                name=self.model.name,
                paused=True,
                decode=status["decode"],
            )
        ready = self.watcher.take() if self.watcher else None
        if ready:
            old = self.model.sha256
            status = prepare_decode(self.config, ready[0])  # here, not on the watcher's thread, and before it serves
            self.model, self.pointer = ready
            log(
                "info",
                event="model_swapped",
                old=old,
                new=self.model.sha256,
                name=self.model.name,
                decode=status["decode"],
            )

    def _progress(self, message: Message) -> None:
        """A job's expansion goes on: keep holding its message, and the loop counts as alive."""
        self.inbox.renew(message)
        self.watchdog.mark()

    def _finish(self, pending) -> None:
        if pending is not None:
            self.stopping.set()
            self.inbox.release(pending.result().messages)
        self.inbox.release(self.inbox.held())
        self.inbox.stop()
        self.watchdog.stop()
        self._fetcher.shutdown(wait=False)
        self._writers.shutdown(wait=False)
        self.prefetcher.close()
        log("info", event="shutdown", **self.counters.as_dict())
        self._finished.set()
        for callback in self.on_exit:
            callback()

    def _drain_bound(self) -> None:
        if self._finished.wait(self.config.drain_timeout_s):
            return
        log(
            "error", event="drain_timeout", drain_timeout_s=self.config.drain_timeout_s, released=len(self.inbox.held())
        )
        self.inbox.release(self.inbox.held())
        self.journal.clear()  # an orderly exit mid-call: the images on the device did not crash anything
        for callback in self.on_exit:
            callback()
        self.force_exit(DRAIN_TIMEOUT_EXIT)
