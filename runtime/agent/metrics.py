"""Observability: JSON log lines, CloudWatch embedded-metric-format fields, and the agent's counters."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import sys
import time

# The per-batch count of finished images; the stack's FleetStalled alarm reads it (stacks/alarms.py)
IMAGES_DONE = "ImagesDone"
# The queue messages a batch or a part finished, and the images those messages held: the images a message holds,
# which the stack's scaling multiplies the message backlog by (stacks/scaling.py): an upload is one image, a part of
# a prefix job 64, a shard thousands
MESSAGES_DONE, MESSAGE_IMAGES = "MessagesDone", "MessageImages"
# The other per-batch metrics of that line, read by the stack's dashboard and `make status`
IMAGE_ERRORS, BATCH_SIZE, DEVICE_TIME = "ImageErrors", "BatchSize", "DeviceTime"
IMAGE_LATENCY, QUEUE_WAIT = "ImageLatency", "QueueWait"
# A model whose decode graphs could not be captured (it serves on the eager loop): one per failed capture
CAPTURE_FAILED = "CaptureFailed"
# With one agent per GPU the same values also go out per GPU ("<instance id>/<index>"), for the dashboard and
# `make status` (stacks/dashboard.py, tools/fleet_view.py); the Queue-only metrics stay the fleet's totals
GPU_DIMENSION = "Gpu"

logger = logging.getLogger("captionkit.agent")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def log(level: str, exc_info: bool = False, **fields) -> None:
    """Log one JSON line made of `fields` (an `event` name first); `exc_info` adds the traceback."""
    logger.log(LEVELS[level], fields.get("event", ""), exc_info=exc_info, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, then the event's fields (or the plain message)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
        }
        line.update(getattr(record, "fields", None) or {"logger": record.name, "message": record.getMessage()})
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def setup_logging(stream=None, level: int = logging.INFO) -> None:
    """Send the agent's log lines to `stream` (stdout: journald and the log shipper read it)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def embedded_metrics(namespace: str, dimensions: dict[str, str], metrics: dict[str, tuple]) -> dict:
    """Fields that make a JSON log line a CloudWatch EMF record: {name: (value or values, unit)}."""
    metrics = {name: pair for name, pair in metrics.items() if pair[0] != []}
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [sorted(dimensions)],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
                }
            ],
        },
        **dimensions,
        **{name: value for name, (value, _) in metrics.items()},
    }


@dataclasses.dataclass
class Counters:
    """What the agent did since it started; logged per batch and at shutdown."""

    done: int = 0  # images with an ok result
    failed: int = 0  # images with an error record
    retried: int = 0  # messages sent back to the queue after a transient failure
    refused: int = 0  # messages moved to the dead-letter queue at once (unknown, malformed, or outside the scope)
    batches: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def batch_metrics(
    config,
    *,
    messages: int,
    message_images: int,
    done: int,
    failed: int,
    size: int,
    device_s: float,
    latencies_s: list[float],
    waits_s: list[float],
) -> dict:
    """The embedded-metric fields of one batch's log line (dimension Queue, and Gpu+Queue when `config.gpu` is set;
    at most 100 values per list); `messages`: the queue messages it finished and `message_images` the images they held
    (a part's progress lines: none; its last line: its one message and all its images)."""
    ms = lambda values: [round(v * 1000, 1) for v in values][:100]  # noqa: E731
    record = embedded_metrics(
        config.metrics_namespace,
        {"Queue": config.queue_url.rsplit("/", 1)[-1]},
        {
            IMAGES_DONE: (done, "Count"),
            IMAGE_ERRORS: (failed, "Count"),
            MESSAGES_DONE: (messages, "Count"),
            MESSAGE_IMAGES: (message_images, "Count"),
            BATCH_SIZE: (size, "Count"),
            DEVICE_TIME: (round(device_s * 1000, 1), "Milliseconds"),
            IMAGE_LATENCY: (ms(latencies_s), "Milliseconds"),
            QUEUE_WAIT: (ms(waits_s), "Milliseconds"),
        },
    )
    if getattr(config, "gpu", ""):
        record["_aws"]["CloudWatchMetrics"][0]["Dimensions"].append([GPU_DIMENSION, "Queue"])
        record[GPU_DIMENSION] = config.gpu
    return record
