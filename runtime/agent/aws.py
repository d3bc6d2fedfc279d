"""boto3 clients with bounded retries and timeouts, and the one exception that says "retry later"."""
from __future__ import annotations

import boto3
import botocore.config
import botocore.exceptions

from runtime.errors import BadImage

# Codes for an S3 object that will never be readable as asked: permanent, an error record at once.
GONE_CODES = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}
ARCHIVED_CODES = {"InvalidObjectState"}


class RetryLater(Exception):
    """A transient failure (S3 or SQS errors, throttling, timeouts): the message goes back to the queue."""


#: Exceptions never retried: they end as an error record for the image (S3 codes: GONE_CODES, ARCHIVED_CODES).
PERMANENT = (BadImage,)

_RETRY_CONFIG = botocore.config.Config(
    retries={"max_attempts": 5, "mode": "standard"},  # backoff with jitter on throttling and 5xx
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=32,
)


def client(service: str, region: str = "", **overrides):
    """A boto3 client that honours AWS_ENDPOINT_URL / AWS_REGION, with the agent's retry policy."""
    config = _RETRY_CONFIG.merge(botocore.config.Config(**overrides)) if overrides else _RETRY_CONFIG
    return boto3.session.Session().client(service, region_name=region or None, config=config)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, else ''."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def classify_read_error(exc: Exception, uri: str) -> Exception:
    """Turn an S3 read failure into `BadImage` (permanent, with a reason) or `RetryLater`."""
    code = error_code(exc)
    if code in GONE_CODES:
        return BadImage(f"{uri}: the object was deleted (or never existed) before it could be read; "
                        f"upload it again to caption it")
    if code in ARCHIVED_CODES:
        return BadImage(f"{uri}: the object is archived (Glacier); restore it, then resubmit it")
    return RetryLater(f"{uri}: {exc.__class__.__name__}: {exc}")
