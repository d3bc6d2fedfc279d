"""Result records: one deterministic JSON object per source image, at `<results prefix><key>.json`."""
from __future__ import annotations

import hashlib
import json

from typing import TYPE_CHECKING

from runtime.agent.aws import GONE_CODES, RetryLater, error_code

if TYPE_CHECKING:
    from runtime.agent.captioning import Captioner
    from runtime.agent.config import AgentConfig
    from runtime.agent.prefetch import Item

SCHEMA = "captionkit.result/1"


def results_location(config: AgentConfig) -> tuple[str, str]:
    """(bucket, prefix) of the agent's own results: objects there are never captioned, so never loop."""
    return config.results_bucket_name, config.results_prefix


def is_own_result(location: tuple[str, str], bucket: str, key: str) -> bool:
    """True for an object under the agent's results `location` (bucket, prefix): never captioned, never listed.

    The one place this rule lives (S3 events and job listings both ask it). An empty prefix matches nothing:
    `load_config` refuses an empty `results_prefix`, so that case is a caller's test double, never a fleet.
    """
    return bool(location[1]) and bucket == location[0] and key.startswith(location[1])


#: S3's longest key, in UTF-8 bytes (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html)
MAX_KEY_BYTES = 1024
LONG_KEYS = "_long-keys/"


def result_key(results_prefix: str, source_key: str) -> str:
    """The result object's key for the source object `source_key`.

    A source key near S3's 1,024-byte limit would make `<prefix><key>.json` too long to write: such a result goes
    to `<prefix>_long-keys/<sha256 of the key>.json` instead (deterministic; the record holds the full key).
    """
    key = f"{results_prefix}{source_key}.json"
    if len(key.encode()) <= MAX_KEY_BYTES:
        return key
    return f"{results_prefix}{LONG_KEYS}{hashlib.sha256(source_key.encode()).hexdigest()}.json"


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
    if getattr(model, "prompt_sha256", None):  # captions from two prompts of one checkpoint never read as one model's
        record["model"]["prompt_sha256"] = model.prompt_sha256
    if item.error:
        record["error"] = item.error
    else:
        record["caption"] = item.caption
    return (json.dumps(record, sort_keys=True, ensure_ascii=False, indent=1) + "\n").encode()


def replaced_since(s3, ref, etag: str) -> bool:
    """True when the source object no longer has the `etag` that was captioned (a newer upload's event will
    write its result, so this one must not land last with the older caption). Deleted since: False."""
    try:
        current = s3.head_object(Bucket=ref.bucket, Key=ref.key).get("ETag", "").strip('"')
    except Exception as exc:  # noqa: BLE001 - only "gone" is an answer; anything else: retry the message
        if error_code(exc) in GONE_CODES:
            return False
        raise RetryLater(f"checking {ref.uri} before writing its result: {exc.__class__.__name__}: {exc}") from exc
    return bool(current) and current != etag


def write(s3, bucket: str, key: str, body: bytes) -> None:
    """Put one result object; any failure (after botocore's own retries) is `RetryLater`."""
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    except Exception as exc:  # noqa: BLE001 - every write failure is transient for the message
        raise RetryLater(f"writing s3://{bucket}/{key}: {exc.__class__.__name__}: {exc}") from exc
