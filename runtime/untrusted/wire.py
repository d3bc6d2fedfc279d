"""Frames between a process and its decoding child: a JSON header, then byte blobs; never pickle.

A frame is a 4-byte little-endian header length, the header (a JSON object whose `blobs` lists the blob lengths) and
the blobs. Both sides bound what they read before allocating it: the parent treats a child as untrusted too, since it
has parsed hostile bytes.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time

MAX_HEADER_BYTES = 1024 * 1024
# the least a child asks of its parent's file per read, and the least the parent's RangedFile fetches per GET: pyarrow's
# small reads then cost neither a frame nor a request each
READ_AHEAD = 1024 * 1024


class WireError(Exception):
    """The other side broke the framing (closed, sent too much, or was too slow): the channel is unusable."""


class Closed(WireError):
    """The other side closed its end (a child that died, or a parent that went away)."""


def encode(header: dict, blobs: tuple[bytes, ...] | list[bytes] = ()) -> list[bytes]:
    """The pieces of one frame, for one writev-like sequence of writes."""
    raw = json.dumps({**header, "blobs": [len(b) for b in blobs]}, ensure_ascii=True).encode()
    if len(raw) > MAX_HEADER_BYTES:
        raise WireError(f"a frame header of {len(raw):,} bytes, over {MAX_HEADER_BYTES:,}")
    return [struct.pack("<I", len(raw)), raw, *blobs]


def send(fd: int, header: dict, blobs: tuple[bytes, ...] | list[bytes] = ()) -> None:
    """Write one whole frame to the file descriptor `fd`, in as few system calls as the pipe allows (each write of
    a small frame wakes the reader once, not once per piece)."""
    pieces = [memoryview(piece) for piece in encode(header, blobs)]
    while pieces:
        try:
            written = os.writev(fd, pieces[:64])
        except BrokenPipeError:
            raise Closed("the other side closed the channel") from None
        while written and pieces:
            if written >= len(pieces[0]):
                written -= len(pieces.pop(0))
            else:
                pieces[0], written = pieces[0][written:], 0


class Reader:
    """The receiving end of a channel: reads what the pipe holds (up to READ_BYTES at a time) and cuts frames."""

    READ_BYTES = 1 << 20

    def __init__(self, fd: int):
        self.fd, self.buffer = fd, bytearray()

    def recv(self, *, max_blob_bytes: int, max_total_bytes: int, timeout_s: float | None = None) -> tuple[dict, list]:
        """One frame: (header, blobs), every length checked before it is read; WireError when it cannot be.

        `timeout_s` bounds the wait for the whole frame (None: wait forever).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        (length,) = struct.unpack("<I", self._exact(4, deadline))
        if length > MAX_HEADER_BYTES:
            raise WireError(f"a frame header of {length:,} bytes, over {MAX_HEADER_BYTES:,}")
        try:
            header = json.loads(self._exact(length, deadline))
        except (ValueError, RecursionError) as exc:  # a header nested past the parser's depth is no header either
            raise WireError(f"a frame header that is not JSON: {exc.__class__.__name__}") from None
        sizes = header.get("blobs") if isinstance(header, dict) else None
        if (
            not isinstance(sizes, list)
            or not all(isinstance(n, int) and 0 <= n <= max_blob_bytes for n in sizes)
            or sum(sizes) > max_total_bytes
        ):
            raise WireError(
                f"a frame's blobs {str(sizes)[:100]} exceed {max_blob_bytes:,} bytes each or {max_total_bytes:,} in all"
            )
        return header, [self._exact(n, deadline) for n in sizes]

    def _exact(self, n: int, deadline: float | None) -> bytes:
        while len(self.buffer) < n:
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0 or not select.select([self.fd], [], [], wait)[0]:
                    raise TimeoutError
            chunk = os.read(self.fd, max(self.READ_BYTES, min(n - len(self.buffer), 64 << 20)))
            if not chunk:
                raise Closed("the other side closed the channel")
            self.buffer += chunk
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out
