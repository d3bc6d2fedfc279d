"""The steps of one fetched batch: caption it on the device, write its results, settle its messages."""
from __future__ import annotations

import concurrent.futures
import contextlib
import time

from runtime.agent import jobs, results
from runtime.agent.config import AgentConfig
from runtime.agent.datasets import plan
from runtime.agent.messages import DATASET_KINDS
from runtime.agent.metrics import log
from runtime.agent.layout import result_key
from runtime.agent.work import Batch, Captioner, Message
from runtime.errors import UnknownMessage


def _no_journal(_uris):
    return contextlib.nullcontext()


def caption(batch: Batch, model: Captioner, on_device=_no_journal) -> float:
    """Caption every decoded image; when a device batch fails, retry its images one by one. Seconds taken.

    `on_device(uris)` is a context manager around each device call (the crash journal, the liveness mark).
    """
    started = time.monotonic()
    for group, pixels in zip(batch.groups, batch.pixels):
        try:
            if pixels is None:
                raise ValueError("preprocessing the batch failed")
            with on_device([item.ref.uri for item in group]):
                texts = model.caption_pixels(pixels)
            for item, text in zip(group, texts, strict=True):
                item.caption = text
        except Exception as exc:  # noqa: BLE001 - find the image that fails, spare the others
            log("error", event="batch_caption_failed", reason=f"{exc.__class__.__name__}: {exc}", images=len(group))
            for item in group:
                try:
                    with on_device([item.ref.uri]):
                        item.caption = model.caption([item.image])[0]
                except Exception as one:  # noqa: BLE001 - that message goes back to the queue
                    item.retry = f"captioning failed: {one.__class__.__name__}: {one}"
    for item in batch.items:
        item.image = None
    return time.monotonic() - started


def write_results(batch: Batch, model: Captioner, s3, config: AgentConfig,
                  pool: concurrent.futures.Executor) -> None:
    """Write the result (or error record) of every finished image, in parallel on `pool`."""
    def write(item):
        if item.retry is None and item.skipped is None:
            key = result_key(config.results_prefix, item.ref.key)
            try:
                if item.ref.etag and item.error is None and results.replaced_since(s3, item.ref, item.etag):
                    item.skipped = (f"{item.ref.uri}: replaced while it was captioned; the newer upload's event "
                                    f"captions it")
                    return
                results.write(s3, config.results_bucket_name, key, results.render(item, model))
            except Exception as exc:  # noqa: BLE001 - RetryLater: the message goes back
                item.retry = str(exc)

    list(pool.map(write, batch.items))


def settle(batch: Batch, s3, sqs, config: AgentConfig, model: Captioner | None = None,
           dead_letter=None, progress=None) -> tuple[list[Message], list[tuple[Message, str]]]:
    """Split the batch's messages into complete ones (delete) and (message, reason) to retry.

    A message is complete when every one of its images has a result written and, for a job,
    its fan-out is sent or, for a chunk, its marker (and maybe the job summary) is written.
    A dataset job no agent can expand (`UnknownMessage`) goes to `dead_letter(message, reason)` alone; a long
    expansion calls `progress(message)` as it goes (the worker renews its hold).
    """
    done, retry = [], []
    for message in batch.messages:
        work = batch.work.get(message.id)
        if work is None:
            continue  # an unknown body, already dead-lettered
        items = [item for item in batch.items if item.message is message]
        failure = next((item.retry for item in items if item.retry), None)
        try:
            if failure is None and work.job and work.job.get("kind") in DATASET_KINDS:
                plan.expand_dataset(s3, sqs, config, work.job, model,
                                    progress=(lambda m=message: progress(m)) if progress else None)
            elif failure is None and work.job:
                jobs.expand(s3, sqs, config, work.job)
            if failure is None and work.chunk:
                jobs.finish_chunk(s3, config, work.chunk, items)
        except UnknownMessage as exc:
            if dead_letter is not None:
                dead_letter(message, str(exc))
                continue
            failure = f"job refused: {exc}"
        except Exception as exc:  # noqa: BLE001 - S3/SQS trouble: try the message again later
            failure = f"job bookkeeping failed: {exc.__class__.__name__}: {exc}"
        if failure:
            retry.append((message, failure))
        else:
            done.append(message)
    return done, retry
