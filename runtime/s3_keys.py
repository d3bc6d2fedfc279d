"""S3 object keys: the longest one S3 takes, and `s3://bucket/key` URIs."""

from __future__ import annotations

#: S3's longest key, in UTF-8 bytes (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html)
MAX_KEY_BYTES = 1024


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); raises ValueError with the expected form."""
    if not isinstance(uri, str) or not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise ValueError(f"{uri!r} is not an S3 URI; expected s3://bucket/key")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key  # keys may hold '?' and '#', so no urlparse
