"""JSON objects in the results bucket: the one writer (optionally only-if-new) and readers of the job folders."""

from __future__ import annotations

import json

from runtime.aws import GONE_CODES, PRECONDITION_CODES, error_code


def put_json(s3, bucket: str, key: str, value, *, only_new: bool = False) -> bool:
    """Write `value` as JSON; with `only_new`, only if the key is absent (IfNoneMatch '*'). False if it was there."""
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=(json.dumps(value, indent=1, sort_keys=True) + "\n").encode(),
            ContentType="application/json",
            **({"IfNoneMatch": "*"} if only_new else {}),
        )
    except Exception as exc:  # noqa: BLE001 - "already there" is an answer; the caller sorts the rest
        if only_new and error_code(exc) in PRECONDITION_CODES:
            return False
        raise
    return True


def read_json(s3, bucket: str, key: str):
    """The JSON object at `key`; S3's error when there is none."""
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def get_json(s3, bucket: str, key: str):
    """The JSON object at `key`, or None when there is none."""
    try:
        return read_json(s3, bucket, key)
    except Exception as exc:  # noqa: BLE001 - only "no such key" means absent
        if error_code(exc) in GONE_CODES:
            return None
        raise
