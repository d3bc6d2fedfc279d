"""The model pointer: read it, fetch and verify the .pt2 it names, load it; publish one (tests, demos)."""
from __future__ import annotations

import datetime
import importlib
import json
import os
import re
import time
from pathlib import Path

from runtime.agent.aws import error_code
from runtime.agent.metrics import log
from runtime.checksum import file_sha256
from runtime.errors import ArtifactError

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class NoModelYet(ArtifactError):
    """No model pointer has been published: a deployed fleet before its first `make upload`."""


def resolve_loader(spec: str):
    """`module:function` -> the function that turns a .pt2 path into a captioner."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def read_pointer(s3, bucket: str, key: str) -> dict:
    """The pointer object as a dict; `ArtifactError` if it is missing or malformed."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NoSuchBucket"):
            raise NoModelYet(f"no model pointer at s3://{bucket}/{key} ({error_code(exc)}); "
                                f"upload a model first (make upload) or fix artifacts_bucket/model_pointer") from None
        raise
    try:
        pointer = json.loads(body)
        if not (isinstance(pointer.get("key"), str) and SHA256.match(str(pointer.get("sha256")))):
            raise ValueError("expected at least {\"key\": \"models/<sha256>.pt2\", \"sha256\": \"<64 hex>\"}")
    except (ValueError, AttributeError) as exc:
        raise ArtifactError(f"the model pointer s3://{bucket}/{key} is malformed: {exc}") from None
    return pointer


def fetch_artifact(s3, bucket: str, pointer: dict, cache_dir: str) -> Path:
    """Download the pointer's .pt2 into `cache_dir` (once) and verify its sha256."""
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{pointer['sha256']}.pt2"
    if path.exists() and file_sha256(path) == pointer["sha256"]:
        return path
    partial = path.with_suffix(".pt2.partial")
    s3.download_file(bucket, pointer["key"], str(partial))
    actual = file_sha256(partial)
    if actual != pointer["sha256"]:
        partial.unlink()
        raise ArtifactError(f"s3://{bucket}/{pointer['key']} has sha256 {actual}, but the pointer says "
                            f"{pointer['sha256']}: the upload is incomplete or was replaced; upload it again")
    partial.replace(path)
    return path


def wait_for_model(config, s3, device: str, sleep=time.sleep):
    """`load_current`, waiting (pointer_poll_s between looks) while no model has been published yet.

    A fleet deployed before its first upload is not broken: exiting would make systemd restart the agent
    until it gave up and had the instance replaced, for nothing.
    """
    while True:
        try:
            return load_current(config, s3, device)
        except NoModelYet as exc:
            log("warning", event="waiting_for_model", reason=str(exc), retry_s=config.pointer_poll_s)
            sleep(config.pointer_poll_s)


def load_current(config, s3, device: str, pointer: dict | None = None):
    """Read the pointer (unless given), fetch and verify its .pt2, load it: (captioner, pointer)."""
    t0 = time.monotonic()
    pointer = pointer or read_pointer(s3, config.artifacts_bucket, config.model_pointer)
    t1 = time.monotonic()
    path = fetch_artifact(s3, config.artifacts_bucket, pointer, config.cache_dir)
    t2 = time.monotonic()
    loader = resolve_loader(config.captioner_loader)
    # fetch_artifact has just hashed the file against the pointer: the loader need not hash it again
    captioner = loader(path, device=device, expected_sha256=pointer["sha256"], sha256_checked=True,
                       **backend_options(config, s3))
    log("info", event="model_fetched", sha256=pointer["sha256"], bytes=path.stat().st_size,
        pointer_s=round(t1 - t0, 3), download_s=round(t2 - t1, 3), load_s=round(time.monotonic() - t2, 3))
    return captioner, pointer


def backend_options(config, s3) -> dict:
    """Extra loader arguments: `quantize`, or for `backend: aoti` the compiled-package caches (local, bucket)."""
    if config.backend == "exported":
        return {"quantize": config.quantize} if config.quantize else {}
    from runtime.agent.metrics import log
    from runtime.aoti import S3Store

    return {"backend": config.backend, "compiled_cache_dir": config.cache_dir, "report": log,
            "remote": S3Store(s3, config.artifacts_bucket, config.compiled_cache_prefix)}


def publish_model(s3, bucket: str, path: str | os.PathLike, pointer_key: str = "models/current.json",
                  **fields) -> dict:
    """Upload a .pt2 as models/<sha256>.pt2 and move the pointer to it; returns the pointer.

    Does not verify the file (tests publish fake and broken artifacts through it on purpose); the
    user-facing path, `make upload` (stacks.models.upload), verifies every record first, which is
    what lets a worker trust a file whose SHA-256 matches the pointer.
    """
    sha = file_sha256(path)
    key = f"{pointer_key.rsplit('/', 1)[0]}/{sha}.pt2" if "/" in pointer_key else f"{sha}.pt2"
    s3.upload_file(str(path), bucket, key)
    try:
        previous = json.loads(s3.get_object(Bucket=bucket, Key=pointer_key)["Body"].read()).get("key")
    except Exception:  # noqa: BLE001 - no previous pointer
        previous = None
    pointer = {"key": key, "sha256": sha, "previous": previous,
               "uploaded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **fields}
    s3.put_object(Bucket=bucket, Key=pointer_key, Body=json.dumps(pointer, indent=1).encode(),
                  ContentType="application/json")
    return pointer
