"""boto3 clients with bounded retries and timeouts, and the one exception that says "retry later"."""

from __future__ import annotations

import boto3
import botocore.config
import botocore.exceptions

from runtime.errors import BadImage, Replaced, RetryLater

# Codes for an S3 object that will never be readable as asked: permanent, an error record at once.
GONE_CODES = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}
ARCHIVED_CODES = {"InvalidObjectState"}
# Codes that no retry will change until someone fixes a bucket name, a policy or a key: an error record at once
# (after the fix, resubmit the image or `make redrive`). S3's error code list:
# https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html#ErrorCodeList
DENIED_CODES = {
    "AccessDenied",
    "403",
    "Forbidden",
    "AllAccessDisabled",
    "InvalidObjectState",
    "AccountProblem",
    "InvalidAccessKeyId",
    "KMS.DisabledException",
    "KMS.NotFoundException",
}
NO_BUCKET_CODES = {"NoSuchBucket", "InvalidBucketName"}
BAD_KEY_CODES = {"KeyTooLongError", "InvalidURI"}
# A conditional request's condition failed: IfMatch (the object changed since the event or since the read began),
# or IfNoneMatch '*' (the object is already there)
PRECONDITION_CODES = {"PreconditionFailed", "412"}
REPLACED_CODES = PRECONDITION_CODES  # after an event: the newer upload has its own event


#: Exceptions never retried: they end as an error record for the image (S3 codes: see `classify_read_error`).
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


def object_exists(s3, bucket: str, key: str) -> bool:
    """Whether a HEAD of the object succeeds (any client error, a 404 or a denial alike, reads as absent)."""
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except botocore.exceptions.ClientError:
        return False


def permanent_reason(code: str, uri: str, action: str = "read") -> str | None:
    """What an S3 error code means for `uri` when no retry will help, else None (a transient error)."""
    if code in ARCHIVED_CODES:
        return f"{uri}: the object is archived (Glacier); restore it, then resubmit it"
    if code in DENIED_CODES:
        return (
            f"{uri}: S3 denied the workers' role the {action} ({code}); the workers may read only the stack's "
            f"images prefix: upload the image there, or widen the role, then resubmit it"
        )
    if code in NO_BUCKET_CODES:
        return f"{uri}: the bucket does not exist ({code}); check the bucket name and resubmit"
    if code in BAD_KEY_CODES:
        return f"{uri}: S3 refused the key ({code}); use a shorter or valid key"
    return None


def classify_read_error(exc: Exception, uri: str) -> Exception:
    """Turn an S3 read failure into `BadImage` (permanent, with a reason), `Replaced` or `RetryLater`."""
    code = error_code(exc)
    if code in GONE_CODES:
        return BadImage(
            f"{uri}: the object was deleted (or never existed) before it could be read; upload it again to caption it"
        )
    if code in REPLACED_CODES:
        return Replaced(
            f"{uri}: replaced after this event (its eTag no longer matches); the newer upload's event captions it"
        )
    reason = permanent_reason(code, uri)
    if reason:
        return BadImage(reason)
    return RetryLater(f"{uri}: {exc.__class__.__name__}: {exc}")
