"""The model registry in the artifacts bucket: content-addressed `.pt2` files and the pointer to the current one.

The one owner of its keys and of the pointer's schema, imported by the laptop tools (`python -m tools.models`),
the agent (which reads the pointer), the CDK app (the lifecycle rule's prefix, the agent's config) and the tests.
No torch at import time: the CDK app imports the keys.

The pointer, `models/current.json`, is one JSON object, replaced whole by one PUT (readers see the old one or
the new one, never a mix):

    key               "models/<sha256>.pt2"   required: the file the agent downloads
    sha256            64 hex digits           required: the whole file's SHA-256, checked after the download
    bytes             the file's size
    uploaded_at       ISO 8601, UTC, seconds
    model, family, dtype, torch_version       from the artifact's manifest (a verified publish)
    history           the pointers before this one, newest first, each without its own history (at most 20)
    rolled_back_from  the key that `rollback` moved away from (after a rollback only)
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path
from typing import Callable

from runtime.artifact.checksum import file_sha256
from runtime.errors import ArtifactError, NoModelYet, RegistryError

MODELS_PREFIX = "models/"
POINTER_KEY = f"{MODELS_PREFIX}current.json"
HISTORY = 20  # previous pointers kept for rollback
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MISSING_CODES = ("NoSuchKey", "404", "NoSuchBucket")


def models_prefix(pointer_key: str = POINTER_KEY) -> str:
    """The folder the pointer sits in, where the `.pt2` files it names go too ('models/')."""
    return pointer_key.rsplit("/", 1)[0] + "/" if "/" in pointer_key else ""


def artifact_key(sha256: str, pointer_key: str = POINTER_KEY) -> str:
    """`models/<sha256>.pt2`: where a file with that SHA-256 is stored."""
    return f"{models_prefix(pointer_key)}{sha256}.pt2"


def read_pointer(s3, bucket: str, key: str = POINTER_KEY) -> dict:
    """The pointer as a dict; `NoModelYet` before the first publish, `ArtifactError` if it is malformed."""
    from runtime.aws import error_code

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        if error_code(exc) in _MISSING_CODES:
            raise NoModelYet(
                f"no model pointer at s3://{bucket}/{key} ({error_code(exc)}); upload a model "
                "first (make upload) or fix artifacts_bucket/model_pointer"
            ) from None
        raise
    try:
        pointer = json.loads(body)
        if not (isinstance(pointer.get("key"), str) and SHA256.match(str(pointer.get("sha256")))):
            raise ValueError('expected at least {"key": "models/<sha256>.pt2", "sha256": "<64 hex>"}')
    except (ValueError, AttributeError) as exc:
        raise ArtifactError(f"the model pointer s3://{bucket}/{key} is malformed: {exc}") from None
    return pointer


def current_pointer(s3, bucket: str, key: str = POINTER_KEY) -> dict | None:
    """The pointer, or None before the first publish."""
    try:
        return read_pointer(s3, bucket, key)
    except NoModelYet:
        return None


def publish(
    s3,
    bucket: str,
    artifact: str | os.PathLike,
    pointer_key: str = POINTER_KEY,
    *,
    verify: bool = True,
    progress: Callable[[int], None] | None = None,
    **fields,
) -> dict:
    """Upload `artifact` as `models/<sha256>.pt2`, check that it landed whole, then move the pointer to it.

    `verify` (the default) first checks the file as the runtime will, so a file the workers would refuse is
    never published; that is what lets a worker trust a download whose SHA-256 matches the pointer without
    hashing its records again. Tests pass `verify=False` to publish fake or broken artifacts on purpose.
    `progress` is called with the bytes sent so far (a tqdm bar's `update`); `fields` go into the pointer.
    """
    from boto3.s3.transfer import TransferConfig

    artifact = Path(artifact)
    described = _describe(artifact) if verify else {}
    sha, size = file_sha256(artifact), artifact.stat().st_size
    key = artifact_key(sha, pointer_key)
    # S3 checks each part's SHA-256 on arrival; the metadata lets `head_object` confirm the whole file.
    s3.upload_file(
        str(artifact),
        bucket,
        key,
        Callback=progress,
        ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": sha}},
        Config=TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=16 << 20),
    )
    head = s3.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != size or head.get("Metadata", {}).get("sha256") != sha:
        raise RegistryError(
            f"s3://{bucket}/{key} is {head['ContentLength']} bytes / sha256 "
            f"{head.get('Metadata', {}).get('sha256')}, expected {size} / {sha}; upload again"
        )
    previous = _previous(s3, bucket, pointer_key)
    pointer = {
        "key": key,
        "sha256": sha,
        "bytes": size,
        **described,
        "uploaded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **fields,
        "history": ([entry(previous)] + previous.get("history", []))[:HISTORY] if previous else [],
    }
    _put_pointer(s3, bucket, pointer_key, pointer)
    return pointer


def rollback(s3, bucket: str, pointer_key: str = POINTER_KEY) -> dict:
    """Move the pointer back to the model before the current one (`RegistryError` if there is none)."""
    current = current_pointer(s3, bucket, pointer_key)
    if not current or not current.get("history"):
        raise RegistryError("nothing to roll back to: the pointer has no previous model")
    back, *older = current["history"]
    s3.head_object(Bucket=bucket, Key=back["key"])  # fails loudly if that version has expired
    pointer = {**back, "history": older, "rolled_back_from": current["key"]}
    _put_pointer(s3, bucket, pointer_key, pointer)
    return pointer


def list_models(s3, bucket: str, pointer_key: str = POINTER_KEY) -> list[dict]:
    """Every uploaded .pt2, newest first, with which one is current."""
    current = (current_pointer(s3, bucket, pointer_key) or {}).get("key")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=models_prefix(pointer_key))
    objects = [o for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".pt2")]
    objects.sort(key=lambda o: o["LastModified"], reverse=True)
    return [
        {
            "key": o["Key"],
            "bytes": o["Size"],
            "uploaded": o["LastModified"].isoformat(timespec="seconds"),
            "current": o["Key"] == current,
        }
        for o in objects
    ]


def entry(pointer: dict) -> dict:
    """A pointer as one line of history: everything but its own history."""
    return {k: v for k, v in pointer.items() if k not in ("history", "previous")}  # `previous`: the old schema


def _describe(artifact: Path) -> dict:
    from runtime.artifact.verify import verify

    manifest, _ = verify(artifact)  # raises ArtifactError, saying why, for a file the runtime would refuse
    return {
        "model": manifest["source"]["model"],
        "family": manifest["family"],
        "dtype": manifest["dtype"],
        "torch_version": manifest["torch_version"],
    }


def _previous(s3, bucket: str, pointer_key: str) -> dict | None:
    try:
        return current_pointer(s3, bucket, pointer_key)
    except ArtifactError:
        return None  # a malformed pointer is replaced, not kept in the history: publishing is how to repair it


def _put_pointer(s3, bucket: str, key: str, pointer: dict) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(pointer, indent=1).encode(), ContentType="application/json")
