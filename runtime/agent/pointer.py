"""The agent's side of the model registry: fetch and verify the .pt2 the pointer names, and load it."""
from __future__ import annotations

import fcntl
import importlib
import time
from pathlib import Path

from runtime.agent.captioning import Captioner
from runtime.agent.config import AgentConfig
from runtime.agent.metrics import log
from runtime.checksum import file_sha256
from runtime.errors import ArtifactError
from runtime.registry import NoModelYet, read_pointer
from runtime.verified import identity, stamped_sha256, write_stamp


def resolve_loader(spec: str):
    """`module:function` -> the function that turns a .pt2 path into a captioner."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def fetch_artifact(s3, bucket: str, pointer: dict, cache_dir: str) -> Path:
    """Download the pointer's .pt2 into `cache_dir` (once) and verify its sha256."""
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{pointer['sha256']}.pt2"
    if path.exists() and _verified_sha256(cache, path) == pointer["sha256"]:
        return path
    # agents sharing a cache take turns: one writes the partial file, the next finds the whole file verified
    with open(path.with_suffix(".pt2.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists() and _verified_sha256(cache, path) == pointer["sha256"]:
            return path
        partial = path.with_suffix(".pt2.partial")
        s3.download_file(bucket, pointer["key"], str(partial))
        actual = file_sha256(partial)
        if actual != pointer["sha256"]:
            partial.unlink()
            raise ArtifactError(f"s3://{bucket}/{pointer['key']} has sha256 {actual}, but the pointer says "
                                f"{pointer['sha256']}: the upload is incomplete or was replaced; upload it again")
        partial.replace(path)
        write_stamp(cache, path, actual, identity(path))  # a restart need not hash the cached file again
    return path


def _verified_sha256(cache: Path, path: Path) -> str:
    """The cached file's SHA-256: from its stamp if unchanged since (runtime.verified), else hashed and stamped."""
    if sha := stamped_sha256(cache, path):
        return sha
    before = identity(path)
    sha = file_sha256(path)
    write_stamp(cache, path, sha, before)
    return sha


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
    captioner = loader(path, device=device, expected_sha256=pointer["sha256"], sha256_checked=True,
                       **backend_options(config, s3))
    log("info", event="model_fetched", sha256=pointer["sha256"], bytes=path.stat().st_size,
        pointer_s=round(t1 - t0, 3), download_s=round(t2 - t1, 3), load_s=round(time.monotonic() - t2, 3))
    return captioner, pointer


def backend_options(config: AgentConfig, s3) -> dict:
    """Extra loader arguments: the local cache (graphs, int8 weights) and `quantize`, or for `backend: aoti` the
    compiled-package caches (local; the bucket's only with `aoti_shared_cache`)."""
    if config.backend == "exported":
        return {"cache_dir": config.cache_dir, **({"quantize": config.quantize} if config.quantize else {})}
    from runtime.agent.metrics import log
    from runtime.aoti import S3Store

    # the shared cache is native code from whoever can write its prefix: used only when the config says to trust them
    remote = S3Store(s3, config.artifacts_bucket, config.compiled_cache_prefix) if config.aoti_shared_cache else None
    return {"backend": config.backend, "compiled_cache_dir": config.cache_dir, "report": log, "remote": remote}
