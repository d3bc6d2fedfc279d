"""A seekable read-only file read a window at a time: the shape both sides of a Parquet read share.

The parent reads an S3 object with ranged GETs (runtime.untrusted.parquet.RangedFile); the decoding child reads the
same file from the parent over its pipe (runtime.untrusted.parquet_file.PipeFile). Either way pyarrow makes many small
reads, so a read that misses fetches a `read_ahead` window (moved back where it would pass the end, so the footer's
reads share one fetch), a read larger than a window is one fetch of its own, and the last WINDOWS windows are kept.
"""

from __future__ import annotations

import io

from runtime.untrusted.wire import READ_AHEAD


class WindowedFile(io.RawIOBase):
    """`size` bytes, fetched by the subclass's `_fetch(start, end)` (bytes [start, end)) a window at a time."""

    WINDOWS = 2

    def __init__(self, size: int, read_ahead: int = READ_AHEAD):
        super().__init__()
        self._size, self._pos, self.read_ahead = size, 0, read_ahead
        self._windows: list[tuple[int, bytes]] = []  # (offset, bytes), the latest first

    def _fetch(self, start: int, end: int) -> bytes:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        start = self._pos
        end = self._size if n is None or n < 0 else min(self._size, start + n)
        if end <= start:
            return b""
        for at, window in self._windows:
            if at <= start and end <= at + len(window):
                break
        else:
            at = start if end - start >= self.read_ahead else max(0, min(start, self._size - self.read_ahead))
            window = self._fetch(at, max(end, min(self._size, at + self.read_ahead)))
            if len(window) < end - at:
                raise OSError(f"the file ended at {at + len(window):,} bytes, before {end:,}")
            self._windows = [(at, window), *self._windows[: self.WINDOWS - 1]]
        self._pos = end
        return window[start - at : end - at]

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
