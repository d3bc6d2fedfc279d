"""The agent's image pipeline alone, no model: SQS receive, S3 reads, decoding and preprocessing (S3 to pixels)."""

from __future__ import annotations

import dataclasses
import os
import time

import torch

from runtime import aws
from runtime.agent.config import AgentConfig
from runtime.agent.prefetch import Prefetcher
from runtime.agent.queue import Inbox
from runtime.artifact.verify import check_artifact
from runtime.images.preprocess import Preprocessor

HOLD_S = 3600  # the run holds its messages and deletes none: none may come back for a second read meanwhile


def boot_threads(vcpus: int | None = None, gpus: int = 1) -> int:
    """The download/decode threads the boot gives each agent: the vCPUs shared out among the GPUs, at least 2
    (stacks/boot/bootstrap.sh; the CPU runs one agent). `vcpus` defaults to this process's, as `nproc` counts them."""
    if vcpus is None:
        vcpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(vcpus // max(gpus, 1), 2)


class PixelsOnly:
    """What the prefetcher needs of a captioner, and nothing more: the artifact's checked preprocessing (the
    Preprocessor that `runtime.captioner.Captioner.preprocess` calls) and its maximum batch; no programs loaded."""

    def __init__(self, artifact: str | os.PathLike):
        manifest = check_artifact(artifact).manifest
        self.max_batch = int(manifest["max_batch"])
        self.preprocess = Preprocessor(manifest["preprocessing"])


@dataclasses.dataclass
class PipelineRun:
    """Seconds for `images` images on `threads` download/decode threads, and (when kept) the pixels by S3 key."""

    seconds: float
    images: int
    threads: int
    pixels: dict[str, torch.Tensor]

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def pipeline_alone(
    queue_url: str,
    images_bucket: str,
    artifact: str | os.PathLike,
    count: int,
    batch_size: int,
    threads: int,
    keep_pixels: bool = False,
) -> PipelineRun:
    """The agent's prefetcher (`runtime.agent.prefetch.Prefetcher`, its S3 client and its thread pool) on `count`
    images named by the messages on `queue_url`, batch after batch as if the device took each one at once.

    The clients are the agent's own (`runtime.aws.client`, so AWS_ENDPOINT_URL points them at moto). Messages are
    held, never deleted, and no result is written. An image that does not come out as pixels raises: a figure
    for fewer images than asked would not be the pipeline's rate.
    """
    config = AgentConfig(
        queue_url=queue_url,
        images_bucket=images_bucket,
        batch_size=batch_size,
        prefetch_threads=threads,
        visibility_timeout_s=HOLD_S,
    )
    model = PixelsOnly(artifact)
    inbox = Inbox(aws.client("sqs", config.region), queue_url, config.visibility_timeout_s)
    prefetcher = Prefetcher(inbox, aws.client("s3", config.region), config)
    done, pixels = 0, {}
    started = time.perf_counter()
    try:
        while done < count:
            batch = prefetcher.fetch(model, wait_s=1)
            if not batch.messages:
                raise RuntimeError(f"the queue ran dry after {done} of {count} images")
            lost = [
                f"{item.ref.key}: {item.error or item.retry or item.skipped or 'not decoded'}"
                for item in batch.items
                if item.image is None
            ]
            if lost or any(p is None for p in batch.pixels):
                raise RuntimeError(f"images that did not become pixels: {lost or 'a preprocessing group failed'}")
            done += len(batch.items)
            if keep_pixels:
                pixels.update(
                    (item.ref.key, row)
                    for group, rows in zip(batch.groups, batch.pixels)
                    for item, row in zip(group, rows)
                )
    finally:
        prefetcher.close()
    return PipelineRun(time.perf_counter() - started, done, threads, pixels)


def bound(pipeline_images_per_s: float, model_images_per_s: float) -> str:
    """Which of the two alone is slower, so bounds the agent: "pipeline" or "model"."""
    return "pipeline" if pipeline_images_per_s < model_images_per_s else "model"
