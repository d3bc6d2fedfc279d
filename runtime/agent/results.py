"""Result records: one deterministic JSON object per source image, at `<results prefix><key>.json`."""
from __future__ import annotations

import json

from typing import TYPE_CHECKING

from runtime.agent.aws import RetryLater

if TYPE_CHECKING:
    from runtime.agent.captioning import Captioner
    from runtime.agent.config import AgentConfig
    from runtime.agent.prefetch import Item

SCHEMA = "captionkit.result/1"


def results_location(config: AgentConfig) -> tuple[str, str]:
    """(bucket, prefix) of the agent's own results: objects there are never captioned, so never loop."""
    return config.results_bucket_name, config.results_prefix


def result_key(results_prefix: str, source_key: str) -> str:
    """The result object's key for the source object `source_key`."""
    return f"{results_prefix}{source_key}.json"


def render(item: Item, model: Captioner) -> bytes:
    """The result JSON for a finished `Item`: same input and model give the same bytes.

    Timings and wall-clock times stay out (they go to the log line and metrics), so a
    redelivered message overwrites the result with byte-identical content.
    """
    record = {
        "schema": SCHEMA,
        "status": "error" if item.error else "ok",
        "source": {
            "bucket": item.ref.bucket,
            "key": item.ref.key,
            "version_id": item.version_id,
            "etag": item.etag,
            "size": item.size,
        },
        "model": {"name": model.name, "sha256": model.sha256},
    }
    if item.error:
        record["error"] = item.error
    else:
        record["caption"] = item.caption
    return (json.dumps(record, sort_keys=True, ensure_ascii=False, indent=1) + "\n").encode()


def write(s3, bucket: str, key: str, body: bytes) -> None:
    """Put one result object; any failure (after botocore's own retries) is `RetryLater`."""
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    except Exception as exc:  # noqa: BLE001 - every write failure is transient for the message
        raise RetryLater(f"writing s3://{bucket}/{key}: {exc.__class__.__name__}: {exc}") from exc
