"""Tar bytes for the streaming reader's tests: real tars from tarfile, crafted header blocks, pax records."""

from __future__ import annotations

import io
import tarfile

from runtime.untrusted import tar
from runtime.untrusted.samples import Sample

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}
MB = 1024 * 1024


def make_tar(members, fmt=tarfile.PAX_FORMAT) -> bytes:
    """members: (name, bytes) for files, (name, "dir") or (name, "->target") for a directory or a symlink."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data == "dir":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:]
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def samples(data: bytes, max_member_bytes=MB, max_samples=1000, stream=None) -> list[Sample]:
    return list(
        tar.iter_samples(stream or io.BytesIO(data), max_member_bytes=max_member_bytes, max_samples=max_samples)
    )


def header(name: bytes, size: int = 0, kind: bytes = b"0", size_field: bytes | None = None) -> bytes:
    """One ustar header block, its checksum right unless the caller edits it afterwards."""
    block = bytearray(512)
    block[: len(name)] = name
    block[100:108] = b"0000644\x00"
    block[124:136] = size_field if size_field is not None else b"%011o\x00" % size
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def pax_record(keyword: bytes, value: bytes) -> bytes:
    body = b" " + keyword + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length += 1
    return str(length).encode() + body


END = bytes(1024)
