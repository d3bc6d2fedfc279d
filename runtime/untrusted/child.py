"""The decoding child: limits itself, then serves the allowed operations on untrusted bytes, one request at a time.

Started by runtime.untrusted.sandbox. Before reading a request it caps its address space and core dumps; each request
then gets a CPU-time allowance (RLIMIT_CPU, so a decoder spinning on crafted bytes is killed by the kernel). Only the
operations in OPERATIONS run: a request names one of them, never a module or a function.
"""

from __future__ import annotations

import os
import resource
import sys

from runtime.untrusted import wire

MAX_REQUEST_BYTES = 1024**3


def _images(channel, args, blobs):
    from runtime.untrusted import images

    return images.decode_request(channel, args, blobs)


def _parquet(name):
    def run(channel, args, blobs):
        from runtime.untrusted import parquet_child

        return getattr(parquet_child, name)(channel, args, blobs)

    return run


OPERATIONS = {
    "image.decode": _images,
    "parquet.inspect": _parquet("inspect"),
    "parquet.samples": _parquet("samples"),
    "parquet.column": _parquet("column"),
    "parquet.rows": _parquet("rows"),
}


class Channel:
    """What an operation sees of its parent: `emit` sends one item, `read_at` asks for bytes of the file it reads."""

    def __init__(self, reader: wire.Reader, wfd: int):
        self.reader, self.wfd = reader, wfd

    def emit(self, header: dict, blobs=()) -> None:
        wire.send(self.wfd, {"item": header}, blobs)

    def read_at(self, offset: int, size: int) -> bytes:
        wire.send(self.wfd, {"read": [offset, size]})
        header, blobs = self.reader.recv(max_blob_bytes=size, max_total_bytes=size)
        if "error" in header:
            raise OSError(header["error"])
        return blobs[0] if blobs else b""


def _limit_cpu(seconds: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + max(1.0, seconds)) + 1
    # Only the soft limit moves (SIGXCPU ends the child): a pooled child serves many requests, and raising its hard
    # limit again needs CAP_SYS_RESOURCE, so a hard limit set per request failed once the child's CPU time grew.
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def serve(rfd: int, wfd: int, memory_bytes: int) -> None:
    """Answer requests until the parent closes the channel."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    reader = wire.Reader(rfd)
    channel = Channel(reader, wfd)
    while True:
        try:
            header, blobs = reader.recv(max_blob_bytes=MAX_REQUEST_BYTES, max_total_bytes=MAX_REQUEST_BYTES)
        except wire.Closed:
            return
        operation = OPERATIONS.get(header.get("op"))
        if operation is None:
            wire.send(wfd, {"error": f"unknown operation {str(header.get('op'))[:50]!r}", "kind": "failed"})
            continue
        _limit_cpu(float(header.get("cpu_s", 60)))
        try:
            result = operation(channel, header.get("args") or {}, blobs)
        except MemoryError:
            reply = {
                "error": f"needs more memory than the decoder's limit of {memory_bytes:,} bytes (decoder_memory_bytes)",
                "kind": "memory",
            }
        except wire.WireError:
            return
        except Exception as exc:  # noqa: BLE001 - hostile bytes: whatever the library raises is this request's error
            from runtime.errors import CaptionKitError

            refused = isinstance(exc, CaptionKitError)
            reply = {
                "error": str(exc) if refused else f"{exc.__class__.__name__}: {exc}",
                "kind": "refused" if refused else "failed",
            }
        else:
            header_out, blobs_out = result if isinstance(result, tuple) else (result or {}, ())
            wire.send(wfd, {"end": header_out}, blobs_out)
            continue
        wire.send(wfd, reply)


def main(memory_bytes: int) -> None:
    """Serve on stdin/stdout; stdout becomes stderr for everything else, so a library that prints cannot corrupt
    the protocol."""
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(rfd, wfd, memory_bytes)
