"""Every command-line entry point's last word: one line saying what to do, a traceback only with CAPTIONKIT_DEBUG=1."""

from __future__ import annotations

import os
import sys
from typing import Callable
from urllib.parse import urlparse

from runtime.errors import CaptionKitError

DEBUG_ENV = "CAPTIONKIT_DEBUG"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
CREDENTIALS_REFUSED = {
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "UnrecognizedClientException",
    "AuthFailure",
}


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _where(url: str | None) -> tuple[str, bool]:
    url = url or os.environ.get("AWS_ENDPOINT_URL") or ""
    return url, urlparse(url).hostname in LOCAL_HOSTS


def explain(exc: BaseException) -> str | None:
    """The one line for an error a user can fix (credentials, endpoint, bucket, stack, input); None if unknown."""
    if isinstance(exc, CaptionKitError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        from botocore import exceptions as bx
        from botocore.parsers import ResponseParserError
    except ImportError:  # a CLI that never talks to AWS on a machine without boto3
        bx = None
    if bx is not None:
        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return "no AWS credentials: run `aws configure` (or `aws sso login`), or `make local-up` for the local AWS"
        if isinstance(exc, bx.NoRegionError):
            return "no AWS region: set AWS_REGION (or run `aws configure`)"
        if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError)):
            url, local = _where(getattr(exc, "kwargs", {}).get("endpoint_url"))
            if local:
                return f"no local stack at {url}: run `make local-up` (or unset AWS_ENDPOINT_URL for AWS)"
            return f"cannot reach {url or 'AWS'}: check your network and AWS_ENDPOINT_URL"
        if isinstance(exc, ResponseParserError):
            url, _ = _where(None)
            return (
                f"the endpoint {url or '(default)'} does not answer like AWS: check AWS_ENDPOINT_URL "
                "(`make local-up` prints the local one)"
            )
        if isinstance(exc, bx.ClientError):
            error = exc.response.get("Error", {})
            code, message = str(error.get("Code", "")), error.get("Message", "")
            if code == "NoSuchBucket":
                bucket = error.get("BucketName") or message
                return (
                    f"bucket {bucket} does not exist there: check the s3:// URI, or deploy the stack "
                    "(`make local-up` locally, `make deploy` on AWS)"
                )
            if code in CREDENTIALS_REFUSED:
                return f"AWS refused the credentials ({code}): run `aws configure` or `aws sso login`"
            if code in ("AccessDenied", "AccessDeniedException", "403"):
                return f"access denied ({exc.operation_name}): these credentials may not do that; {message}".strip()
            if not code or code.isdigit() or code == "Unknown":  # an answer with no AWS error document in it
                url, _ = _where(None)
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", code)
                return (
                    f"the endpoint {url or '(default)'} answered HTTP {status} to {exc.operation_name} without "
                    "an AWS error: it is not an AWS endpoint; check AWS_ENDPOINT_URL"
                )
            return f"{exc.operation_name} failed: {code}: {message}"
        if isinstance(exc, bx.BotoCoreError):
            return f"AWS: {exc}"
    if isinstance(exc, ValueError) and "Invalid endpoint" in str(exc):
        return f"{exc}: check AWS_ENDPOINT_URL (for example http://localhost:5050)"
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return f"{exc.strerror}: {exc.filename}"
    return None


def run(main: Callable[[list[str] | None], int], argv: list[str] | None, prog: str) -> int:
    """`main(argv)`, with any exception turned into `prog: <one line>` on stderr and exit status 2."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the user gets one line whatever broke; the trace is one flag away
        if debugging():
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        try:
            known = explain(exc)
        except Exception:  # noqa: BLE001 - explaining must never cost the user their one line
            known = None
        line = known or f"unexpected {type(exc).__name__}: {first} (rerun with {DEBUG_ENV}=1 for the traceback)"
        print(f"{prog}: {line}", file=sys.stderr)
        return 2
