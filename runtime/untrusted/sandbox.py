"""Child processes that parse untrusted bytes (Parquet, images) under address-space and CPU-time limits.

A crafted file can abort pyarrow, overflow its stack or make it allocate without end; no pre-check in Python covers
every path into a C++ parser. So the parsing happens in a child (runtime.untrusted.child) and the caller gets plain
values back over a pipe (runtime.untrusted.wire, no pickle). A child that dies, runs out of memory or CPU time, or
stalls is killed and replaced, and the caller gets one `Failed` error naming the limit: the shard fails, the sample
becomes an error row, submit refuses the job; the agent, submit and collect live on.

Children are kept in a pool and reused while healthy; one serving a stream that the caller abandons is killed
(its protocol state is unknown), never returned.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import BinaryIO, Iterator

from runtime.errors import CaptionKitError
from runtime.untrusted import wire

ROOT = str(Path(__file__).resolve().parents[2])
BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from runtime.untrusted.child import main; main(int(sys.argv[2]))"
# what a child may be handed: AWS credentials are the parent's business, never a parser's
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_BYTES = 1024 * 1024  # Linux's default /proc/sys/fs/pipe-max-size
DEFAULT_MEMORY_BYTES = 2 * 1024**3  # a child's address space: the agent's decoder_memory_bytes
DEFAULT_CPU_S = 60.0  # a child's CPU seconds per request: the agent's decoder_cpu_s
MAX_READ_BYTES = 1024**3  # one read a child may ask of its file (a row group: parquet.MAX_ROW_GROUP_BYTES at most)
SIGNALS = {
    signal.SIGXCPU: "its CPU time limit (decoder_cpu_s)",
    signal.SIGKILL: "a kill (CPU time or memory)",
    signal.SIGSEGV: "a crash (SIGSEGV: a stack overflow or a bad memory access)",
    signal.SIGABRT: "an abort (SIGABRT: the library gave up on the bytes)",
    signal.SIGBUS: "a crash (SIGBUS)",
    signal.SIGFPE: "a crash (SIGFPE)",
    signal.SIGILL: "a crash (SIGILL)",
}


class Failed(CaptionKitError):
    """The child could not finish: the bytes were refused, or it died, ran over a limit or stalled (the message says
    which). Permanent for these bytes: retrying them unchanged gives the same answer."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one child may use: address space (bytes), CPU seconds per request, seconds to wait for each reply."""

    memory_bytes: int = DEFAULT_MEMORY_BYTES
    cpu_s: float = DEFAULT_CPU_S
    wait_s: float = 120.0
    max_reply_bytes: int = 1024**3


class _Child:
    def __init__(self, limits: Limits):
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        env.update(ARROW_DEFAULT_MEMORY_POOL="system", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        self.limits = limits
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", BOOT, ROOT, str(limits.memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self.wfd = self.proc.stdin.fileno()
        self.reader = wire.Reader(self.proc.stdout.fileno())
        for fd in (self.wfd, self.reader.fd):  # room for a batch in the pipe: the child runs ahead of a slow reader
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                pipe.close()

    def death(self) -> str:
        """Why the child is gone, once it is."""
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
            return "stopped answering"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return f"was ended by {SIGNALS.get(-code, f'signal {name}')}"
        return f"exited with status {code}"


class Sandbox:
    """A pool of decoding children under one set of limits."""

    def __init__(self, limits: Limits = Limits(), keep: int = 8):
        self.limits, self.keep = limits, keep
        self._idle: list[_Child] = []
        self._lock = threading.Lock()
        self.started = 0

    @contextlib.contextmanager
    def _child(self) -> Iterator[_Child]:
        with self._lock:
            child = None
            while self._idle and child is None:
                child = self._idle.pop()
                if not child.alive():
                    child.kill()
                    child = None
            if child is None:
                self.started += 1
        child = child or _Child(self.limits)  # started outside the lock: other threads take idle children meanwhile
        healthy = False
        try:
            yield child
            healthy = True
        finally:
            with self._lock:
                if healthy and child.alive() and len(self._idle) < self.keep:
                    self._idle.append(child)
                    child = None
            if child is not None:
                child.kill()

    def stream(
        self,
        op: str,
        args: dict,
        blobs=(),
        *,
        file: BinaryIO | None = None,
        what: str = "the reader",
        error: type[CaptionKitError] = Failed,
    ) -> Iterator[tuple[dict, list[bytes]]]:
        """Run `op` in a child and yield each item it emits; `file` answers the child's reads. The end header and its
        blobs come last, as an item with the key "end". `error` is raised (with the reason) when the child refuses
        the bytes, fails, dies, runs over a limit or stalls."""
        with self._child() as child:
            try:
                wire.send(child.wfd, {"op": op, "args": args, "cpu_s": self.limits.cpu_s}, blobs)
            except wire.Closed:
                raise error(f"{what} {child.death()}") from None
            while True:
                header, data = self._recv(child, what, error)
                if "read" in header:
                    self._serve_read(child, header["read"], file, what, error)
                elif "item" in header:
                    yield header["item"], data
                elif "end" in header:
                    break
                else:
                    kind = header.get("kind")
                    text = str(header.get("error", "failed"))[:2000]
                    raise error(f"{what}: {text}" if kind != "refused" else text)
        # the child is back in the pool before the end is handed over: a caller may stop at it
        yield {"end": header["end"]}, data

    def call(self, op: str, args: dict, blobs=(), **kwargs) -> tuple[dict, list[bytes]]:
        """Run `op` to its end: (the end header, its blobs)."""
        result = None
        for header, data in self.stream(op, args, blobs, **kwargs):  # to its end, so the child goes back to the pool
            if "end" in header:
                result = header["end"], data
        return result  # the stream always ends with "end", or raises

    def _recv(self, child: _Child, what: str, error) -> tuple[dict, list[bytes]]:
        limits = self.limits
        try:
            header, data = child.reader.recv(
                max_blob_bytes=limits.max_reply_bytes, max_total_bytes=limits.max_reply_bytes, timeout_s=limits.wait_s
            )
        except TimeoutError:
            child.kill()
            raise error(f"{what} took longer than {limits.wait_s:g} s to answer (the decoder's wait limit)") from None
        except wire.Closed:
            raise error(f"{what} {child.death()}") from None
        except wire.WireError as exc:
            child.kill()
            raise error(f"{what} broke its protocol ({exc})") from None
        if not isinstance(header, dict):
            child.kill()
            raise error(f"{what} broke its protocol (a header that is not an object)")
        return header, data

    @staticmethod
    def _serve_read(child: _Child, request, file: BinaryIO | None, what: str, error) -> None:
        if file is None or not (
            isinstance(request, list)
            and len(request) == 2
            and all(isinstance(n, int) and n >= 0 for n in request)
            and request[1] <= MAX_READ_BYTES
        ):
            child.kill()
            raise error(f"{what} asked for a read it may not make")
        offset, size = request
        file.seek(offset)
        data = file.read(size)  # S3 trouble propagates unchanged, for the caller to classify
        try:
            wire.send(child.wfd, {}, (data,))
        except wire.Closed:
            raise error(f"{what} {child.death()}") from None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            child.kill()


_shared: Sandbox | None = None
_shared_lock = threading.Lock()


def shared() -> Sandbox:
    """The process's one pool (limits from `configure`, else the defaults)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Sandbox()
            atexit.register(_shared.close)
        return _shared


def configure(limits: Limits, keep: int = 8) -> Sandbox:
    """Replace the process's pool by one with these limits (the agent, from its settings)."""
    global _shared
    with _shared_lock:
        old, _shared = _shared, Sandbox(limits, keep)
        if old is None:
            atexit.register(lambda: _shared and _shared.close())
    if old is not None:
        old.close()
    return _shared
