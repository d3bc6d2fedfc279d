"""The agent's side of the model registry: fetch and verify the .pt2 the pointer names, and load it."""

from __future__ import annotations

import fcntl
import importlib
import time
from pathlib import Path

from runtime import cache
from runtime.agent.config import AgentConfig
from runtime.agent.metrics import log
from runtime.agent.work import Captioner
from runtime.artifact.checksum import file_sha256
from runtime.errors import ArtifactError
from runtime.options import LoadOptions
from runtime.registry import NoModelYet, read_pointer


def resolve_loader(spec: str):
    """`module:function` -> the function that turns a .pt2 path into a captioner."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def fetch_artifact(s3, bucket: str, pointer: dict, cache_dir: str) -> Path:
    """Download the pointer's .pt2 into `cache_dir` (once) and verify its sha256."""
    path = cache.artifact_file(cache_dir, pointer["sha256"])
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and cache.stamped_or_hashed(cache_dir, path, lambda: file_sha256(path)) == pointer["sha256"]:
        return path
    # agents sharing a cache take turns: one writes the partial file, the next finds the whole file verified
    with open(path.with_suffix(".pt2.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists() and cache.stamped_or_hashed(cache_dir, path, lambda: file_sha256(path)) == pointer["sha256"]:
            return path
        partial = path.with_suffix(".pt2.partial")
        s3.download_file(bucket, pointer["key"], str(partial))
        actual = file_sha256(partial)
        if actual != pointer["sha256"]:
            partial.unlink()
            raise ArtifactError(
                f"s3://{bucket}/{pointer['key']} has sha256 {actual}, but the pointer says "
                f"{pointer['sha256']}: the upload is incomplete or was replaced; upload it again"
            )
        partial.replace(path)
        cache.write_stamp(cache_dir, path, actual, cache.identity(path))  # a restart need not hash it again
    return path


def wait_for_model(config: AgentConfig, s3, device: str, sleep=time.sleep) -> tuple[Captioner, dict]:
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


def load_current(config: AgentConfig, s3, device: str, pointer: dict | None = None) -> tuple[Captioner, dict]:
    """Read the pointer (unless given), fetch and verify its .pt2, load it: (captioner, pointer)."""
    t0 = time.monotonic()
    pointer = pointer or read_pointer(s3, config.artifacts_bucket, config.model_pointer)
    t1 = time.monotonic()
    path = fetch_artifact(s3, config.artifacts_bucket, pointer, config.cache_dir)
    t2 = time.monotonic()
    loader = resolve_loader(config.captioner_loader)
    # fetch_artifact has just hashed the file against the pointer: the loader need not hash it again
    captioner = loader(
        path, device=device, expected_sha256=pointer["sha256"], sha256_checked=True, **backend_options(config, s3)
    )
    log(
        "info",
        event="model_fetched",
        sha256=pointer["sha256"],
        bytes=path.stat().st_size,
        pointer_s=round(t1 - t0, 3),
        download_s=round(t2 - t1, 3),
        load_s=round(time.monotonic() - t2, 3),
    )
    return captioner, pointer


def backend_options(config: AgentConfig, s3) -> dict:
    """The loader's arguments besides the file: the local cache, the load options (`quantize`, or `backend: aoti`
    with the bucket's compiled packages only under `aoti_shared_cache`) and where aoti reports go."""
    if config.backend == "exported":
        return {"cache_dir": config.cache_dir, "options": LoadOptions(quantize=config.quantize or None)}
    from runtime.backends.aoti import S3Store

    # the shared cache is native code from whoever can write its prefix: used only when the config says to trust them
    remote = S3Store(s3, config.artifacts_bucket, config.compiled_cache_prefix) if config.aoti_shared_cache else None
    return {"cache_dir": config.cache_dir, "options": LoadOptions(backend=config.backend, remote=remote), "report": log}
