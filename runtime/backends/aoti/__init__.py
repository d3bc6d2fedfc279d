"""AOTInductor backend: compile an artifact's exported programs for this device once, cache and reuse the package.

A compiled package is specific to the artifact, the torch version and the device (GPU architecture, or
the CPU's vector instruction set), so its cache key holds all three. Lookup order: the local cache
directory (a package there is native code: loaded only as runtime.backends.aoti.trust allows), then an optional remote
store (the agent's artifacts bucket, off unless `aoti_shared_cache` trusts its every writer; each package is
checked against the SHA-256 published beside it), then compiling here (runtime.backends.aoti.compile; the result is
stored in both). Any failure raises `AotiUnavailable` with the reason; the caller falls back to the exported
programs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Protocol

import torch

from runtime import cache
from runtime.artifact.checksum import file_sha256
from runtime.artifact.manifest import PROGRAMS, torch_release
from runtime.backends.aoti import trust
from runtime.backends.aoti.compile import compile_package
from runtime.errors import AotiUnavailable

logger = logging.getLogger("captionkit.aoti")
Report = Callable[..., None]  # report(level, event=..., **fields)


class RemoteStore(Protocol):
    """Where compiled packages are shared between instances (the agent's artifacts bucket)."""

    def fetch(self, key: str, dest: Path) -> bool: ...

    def store(self, key: str, path: Path) -> None: ...


def default_report(level: str, **fields) -> None:
    """Log one line through the standard `captionkit.aoti` logger (fields kept for JSON formatters)."""
    logger.log(
        getattr(logging, level.upper()), " ".join(f"{k}={v}" for k, v in fields.items()), extra={"fields": fields}
    )


def device_tag(device: torch.device) -> str:
    """'cuda-sm_90' for a GPU (its architecture), 'cpu-avx512' etc. for the CPU (the vector ISA compiled for)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda-sm_{major}{minor}"
    return f"cpu-{torch.backends.cpu.get_cpu_capability().lower()}"


def cache_key(sha256: str, device: torch.device) -> str:
    """`<artifact sha256>/<torch version>/<device tag>.pt2`: the same key locally and in the remote store."""
    return f"{sha256}/{torch_release(torch.__version__)}/{device_tag(device)}.pt2"


def load_package(path: Path, device: torch.device) -> dict:
    """The compiled encoder and decoder-step runners of a package, callable like the exported modules."""
    from runtime.artifact.pt2 import load_pt2

    device = torch.device(device)
    runners = load_pt2(str(path), device_index=device.index if device.index is not None else -1).aoti_runners
    return {name: Contiguous(runners[name]) for name in PROGRAMS}


class Contiguous:
    """Calls a compiled runner with contiguous inputs: AOTInductor code assumes the example inputs' strides.

    Beam search feeds the decoder a strided view of its token matrix; the exported program copes, the
    compiled one would read the wrong tokens. `.contiguous()` costs nothing for tensors that already are.
    """

    def __init__(self, runner):
        self.runner = runner

    def __call__(self, *args):
        return self.runner(*(a.contiguous() for a in args))


def compiled_programs(
    artifact: str | os.PathLike,
    sha256: str,
    device: torch.device,
    cache_dir: str | os.PathLike,
    remote: RemoteStore | None = None,
    report: Report = default_report,
    compile_fn: Callable[..., Path] | None = None,
) -> dict:
    """Programs from the local cache, else the remote store, else compiled here (then stored in both).

    A cached package is loaded only if runtime.backends.aoti.trust finds it safe: else it is compiled (or fetched)
    again, in place when only the file is amiss, in a private temporary folder when a folder above it is; the
    warning says why. A fetched package must match the SHA-256 its publisher stored beside it.
    """
    key = cache_key(sha256, device)
    root = cache.folder(cache_dir).resolve()
    local = cache.compiled_root(cache_dir) / key
    private = None
    source = "local cache"
    try:
        trust.make_folders(local.parent, root)
        if why := trust.unsafe_folders(local.parent, root):
            private = Path(tempfile.mkdtemp(prefix="captionkit-aoti-"))
            report(
                "warning",
                event="aoti_cache_untrusted",
                key=key,
                reason=f"{why}: not loading or keeping native code there; compiling into {private} instead",
            )
            local = private / local.name
        elif (os.path.lexists(local) or os.path.lexists(trust.sidecar(local))) and (why := trust.unusable(local)):
            report("warning", event="aoti_package_refused", key=key, reason=f"{why}; fetching or compiling it again")
            _remove(local)
        if not local.exists():
            if remote is not None and _fetch(remote, key, local, report):
                source = "remote cache"
            else:
                started = time.monotonic()
                with tempfile.TemporaryDirectory(dir=local.parent) as tmp:
                    built = (compile_fn or compile_package)(artifact, device, Path(tmp) / local.name)
                    shutil.move(str(built), local)
                trust.seal(local)
                source = f"compiled in {time.monotonic() - started:.1f} s"
                report("info", event="aoti_compiled", key=key, compile_s=round(time.monotonic() - started, 1))
                if remote is not None:
                    _store(remote, key, local, report)
        # load_pt2 on a package that this uid compiled or checked against its publisher's digest, in folders no
        # one else can write: the trust it needs (pickle, guard code, a shared library) is that of its writer.
        try:
            programs = load_package(local, device)
        except Exception:
            _remove(local)  # a damaged package: the next start fetches or compiles afresh
            raise
    except AotiUnavailable:
        raise
    except Exception as exc:  # compiler missing, out of memory, a damaged package: all mean "use exported"
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise AotiUnavailable(f"{exc.__class__.__name__}: {first_line}") from exc
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
    report("info", event="aoti_loaded", key=key, source=source)
    return programs


def _remove(package: Path) -> None:
    package.unlink(missing_ok=True)
    trust.sidecar(package).unlink(missing_ok=True)


def _fetch(remote: RemoteStore, key: str, dest: Path, report: Report) -> bool:
    """The shared package into `dest` (sealed) if its publisher's SHA-256 sidecar is there and matches it."""
    digest_file = dest.with_name(dest.name + ".remote" + trust.DIGEST_SUFFIX)
    try:
        if not remote.fetch(key + trust.DIGEST_SUFFIX, digest_file):
            return False  # none published yet (or by an agent that wrote no digest): compile and publish one
        expected = trust.read_digest(digest_file)
        if expected is None:
            report(
                "warning",
                event="aoti_remote_refused",
                key=key,
                reason="the shared package's published digest is not a SHA-256; compiling here instead",
            )
            return False
        if not remote.fetch(key, dest):
            return False
        actual = file_sha256(dest)
        if actual != expected:
            dest.unlink()
            report(
                "warning",
                event="aoti_remote_refused",
                key=key,
                reason=f"the shared package has SHA-256 {actual[:12]}…, its published digest says "
                f"{expected[:12]}…; compiling here instead",
            )
            return False
        trust.seal(dest, actual)
        return True
    except Exception as exc:  # noqa: BLE001 - an unreadable shared cache is no reason not to compile here
        dest.unlink(missing_ok=True)
        report("warning", event="aoti_fetch_failed", key=key, reason=f"{exc.__class__.__name__}: {exc}")
        return False
    finally:
        digest_file.unlink(missing_ok=True)


def _store(remote: RemoteStore, key: str, path: Path, report: Report) -> None:
    try:
        remote.store(key, path)
        remote.store(key + trust.DIGEST_SUFFIX, trust.sidecar(path))  # after the package: a reader sees both or none
        report("info", event="aoti_uploaded", key=key)
    except Exception as exc:  # noqa: BLE001 - sharing is an optimisation; this instance still uses its package
        report("warning", event="aoti_upload_failed", key=key, reason=f"{exc.__class__.__name__}: {exc}")


class S3Store:
    """Compiled packages under `s3://<bucket>/<prefix><key>`."""

    def __init__(self, s3, bucket: str, prefix: str):
        self.s3, self.bucket, self.prefix = s3, bucket, prefix

    def fetch(self, key: str, dest: Path) -> bool:
        partial = dest.with_name(dest.name + ".download")
        try:
            self.s3.download_file(self.bucket, self.prefix + key, str(partial))
        except Exception as exc:  # noqa: BLE001 - missing (404) means compile; anything else is reported by the caller
            partial.unlink(missing_ok=True)
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise
        partial.replace(dest)
        return True

    def store(self, key: str, path: Path) -> None:
        self.s3.upload_file(str(path), self.bucket, self.prefix + key)
