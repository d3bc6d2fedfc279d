"""What a queue message asks for: S3 event notifications, batch jobs, and the chunks jobs fan out to."""
from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse

from runtime.agent.results import is_own_result

JOB_TYPE = "captionkit.job"
CHUNK_TYPE = "captionkit.chunk"
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UnknownMessage(ValueError):
    """A body the agent cannot act on; it goes to the dead-letter queue, never crashes the agent."""


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """One S3 object to caption, optionally pinned to a version."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None  # the event's eTag: the read is IfMatch on it, so replaced bytes are never captioned

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Which slice of which job a chunk message is."""

    job_id: str
    index: int
    count: int


@dataclasses.dataclass(frozen=True)
class Work:
    """What one message asks for. `images` may be empty (a test event, a removal): delete it."""

    images: tuple[ImageRef, ...] = ()
    chunk: Chunk | None = None
    job: dict | None = None  # a job to fan out into chunk messages
    note: str = ""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); raises ValueError with the expected form."""
    if not isinstance(uri, str) or not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise ValueError(f"{uri!r} is not an S3 URI; expected s3://bucket/key")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key  # keys may hold '?' and '#', so no urlparse


def parse_body(body: str, skip_prefix: tuple[str, str] = ("", "")) -> Work:
    """Parse a message body; the agent's own results (`skip_prefix`: (bucket, prefix), see
    `results.is_own_result`) are skipped."""
    try:
        data = json.loads(body)
    except (TypeError, json.JSONDecodeError):
        raise UnknownMessage(f"the body is not JSON: {str(body)[:200]!r}") from None
    if isinstance(data, dict) and data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        return parse_body(data["Message"], skip_prefix)  # delivered through SNS
    if not isinstance(data, dict):
        raise UnknownMessage(f"expected a JSON object, got {type(data).__name__}")
    if data.get("Event") == "s3:TestEvent":
        return Work(note="s3:TestEvent")
    if isinstance(data.get("Records"), list):
        return _s3_event(data["Records"], skip_prefix)
    if data.get("type") == JOB_TYPE:
        return Work(job=_job(data))
    if data.get("type") == CHUNK_TYPE:
        return _chunk(data)
    raise UnknownMessage(f"neither an S3 event nor a CaptionKit job: keys {sorted(data)[:10]}")


def _s3_event(records: list, skip_prefix: tuple[str, str]) -> Work:
    images, skipped = [], []
    for record in records:
        try:
            name = record["eventName"]
            bucket = record["s3"]["bucket"]["name"]
            key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
        except (KeyError, TypeError):
            raise UnknownMessage(f"an S3 event record without eventName/bucket/key: {str(record)[:200]}") from None
        if not name.startswith("ObjectCreated:") or key.endswith("/"):
            skipped.append(f"{name} {key}")
        elif is_own_result(skip_prefix, bucket, key):
            skipped.append(f"result object {key}")
        else:
            obj = record["s3"]["object"]
            images.append(ImageRef(bucket, key, obj.get("versionId") or None, str(obj.get("eTag") or "") or None))
    return Work(images=tuple(images), note="; ".join(skipped))


def _job(data: dict) -> dict:
    job_id, images, prefix = data.get("job_id"), data.get("images"), data.get("prefix")
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        raise UnknownMessage(f"job_id {job_id!r} must be 1-128 letters, digits, '.', '_' or '-'")
    if (images is None) == (prefix is None):
        raise UnknownMessage(f"job {job_id} must name either 'images' (a list of S3 URIs) or 'prefix'")
    try:
        if prefix is not None:
            parse_s3_uri(prefix)
        elif not isinstance(images, list) or not images:
            raise TypeError("'images' must be a non-empty list of S3 URIs")
        else:
            [parse_s3_uri(uri) for uri in images]
    except (TypeError, ValueError) as exc:
        raise UnknownMessage(f"job {job_id}: {exc}") from None
    return {"job_id": job_id, "images": images, "prefix": prefix}


def _chunk(data: dict) -> Work:
    try:
        chunk = Chunk(str(data["job_id"]), int(data["index"]), int(data["count"]))
        images = tuple(ImageRef(*parse_s3_uri(uri)) for uri in data["images"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UnknownMessage(f"a malformed job chunk ({exc.__class__.__name__}: {exc})") from None
    return Work(images=images, chunk=chunk)
