"""Result records: one deterministic JSON object per source image, at its key (runtime.agent.layout)."""

from __future__ import annotations

import json

from runtime.agent.work import Captioner, Item
from runtime.aws import GONE_CODES, RetryLater, error_code

SCHEMA = "captionkit.result/1"


def render(item: Item, model: Captioner) -> bytes:
    """The result JSON for a finished `Item`: same input and model give the same bytes.

    Timings and wall-clock times stay out (they go to the log line and metrics), so a
    redelivered message overwrites the result with byte-identical content.
    """
    source = {"version_id": item.version_id, "etag": item.etag, "size": item.size}
    return render_source(item.ref.bucket, item.ref.key, source, item.caption, item.error, model)


def render_source(bucket: str, key: str, read: dict, caption: str | None, error: str | None, model) -> bytes:
    """The result JSON of the object `bucket`/`key` as it was read (`read`: its version_id, etag and size, each
    None when unknown), with its caption or its error: the one shape of every result record."""
    record = {
        "schema": SCHEMA,
        "status": "error" if error else "ok",
        "source": {"bucket": bucket, "key": key, **{name: read.get(name) for name in ("version_id", "etag", "size")}},
        "model": {"name": model.name, "sha256": model.sha256},
    }
    if getattr(model, "prompt_sha256", None):  # captions from two prompts of one checkpoint never read as one model's
        record["model"]["prompt_sha256"] = model.prompt_sha256
    if error:
        record["error"] = error
    else:
        record["caption"] = caption
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
