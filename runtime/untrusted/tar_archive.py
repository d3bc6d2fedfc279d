"""A tar archive's members over a read(n)-only stream: headers, pax records, GNU long names and sparse maps, bounded.

Not `tarfile`: it reads a pax header of any size into memory, and a shard is untrusted. Here every allocation is
bounded before it is made: a pax header by MAX_PAX_BYTES, a GNU long name by MAX_LONGNAME_BYTES, a sparse map by
MAX_SPARSE_REGIONS; a member's data is read only when its consumer asks, after bounding its size, and everything else
(other members, skipped entries, padding) is read and dropped CHUNK at a time.

What the reader decides, where the formats leave it open:
- members are regular files (typeflag '0', NUL or '7', contiguous) and GNU sparse files, read as `tarfile` and GNU
  tar read them: old GNU 'S' (regions in the header and its extension blocks) and PAX 0.0, 0.1 and 1.0 (GNU.sparse.*
  records; 1.0's map opens the data), at most MAX_SPARSE_REGIONS regions; a sparse member whose map is not valid is
  Unusable (its sample's error row); hard links and symlinks are listed but never read; directories, devices, fifos
  and volume labels are skipped; pax 'x' gives `path` (and `size`, which frames the data of a member over 8 GiB), 'g'
  is skipped, GNU 'L' gives the next name and 'K' is skipped;
- the archive ends at a zero block followed by a zero block or the end of the stream; a stream that ends without
  one is truncated (a shard cut at a header boundary would otherwise lose its tail silently).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import BinaryIO, Iterator

from runtime.untrusted.samples import ShardError

BLOCK = 512
CHUNK = 256 * 1024  # the largest read made of the stream
MAX_PAX_BYTES = 64 * 1024
MAX_LONGNAME_BYTES = 4 * 1024
MAX_SPARSE_REGIONS = 1024  # data regions of a GNU sparse member (an image has few runs of 4 KiB zeros)
MAX_DECIMAL = 20  # digits of a number in a pax record or a sparse map (2**64 has 20)
FILES = frozenset(b"0\x007")
LINKS = {ord("1"): "hard link", ord("2"): "symlink"}
GNU_SPARSE = ord("S")
EXTENDED = frozenset(b"xgLK")
ZERO_BLOCK = bytes(BLOCK)


class Unusable(Exception):
    """A member that frames right but cannot be read (a sparse map that is not valid): its sample's error row."""


@dataclasses.dataclass
class Sparse:
    """A GNU sparse member's layout: its real size and its (offset, length) data regions, None while they are still
    in the data (PAX 1.0), or why it cannot be read."""

    realsize: int
    regions: list[tuple[int, int]] | None
    error: str | None = None


@dataclasses.dataclass
class Entry:
    """A member of the archive whose data has yet to be read: `left` bytes of it are still in the stream."""

    name: bytes
    kind: int  # its typeflag byte
    size: int
    offset: int  # of its header
    left: int
    sparse: Sparse | None = None

    @property
    def real_size(self) -> int:
        """Bytes of the file the member holds (a sparse file's holes included)."""
        return self.sparse.realsize if self.sparse is not None else self.size


class Archive:
    """Tar headers over a read(n)-only stream, the offset always known, so every error names its byte."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.offset = 0

    def _read(self, n: int) -> bytes:
        """Up to n bytes (n <= CHUNK): fewer only at the end of the stream (a socket may return short reads)."""
        parts, got = [], 0
        while got < n:
            part = self.stream.read(n - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        self.offset += got
        return b"".join(parts)

    def _exact(self, n: int) -> bytes:
        """Exactly n bytes, CHUNK at a time (n is bounded by the caller), or ShardError for a truncated shard."""
        parts, left = [], n
        while left:
            part = self._read(min(left, CHUNK))
            if not part:
                raise ShardError(f"truncated at byte {self.offset}: the shard ends inside a member")
            parts.append(part)
            left -= len(part)
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        while n:
            part = self._read(min(n, CHUNK))
            if not part:
                raise ShardError(f"truncated at byte {self.offset}: the shard ends inside a member")
            n -= len(part)

    def data(self, entry: Entry) -> bytes:
        """The member's bytes (the caller has bounded entry.real_size); Unusable for a sparse map that is not valid."""
        if entry.sparse is not None:
            return self._sparse_data(entry, entry.sparse)
        data = self._exact(entry.left)
        entry.left = 0
        return data

    def _sparse_data(self, entry: Entry, sparse: Sparse) -> bytes:
        """A sparse member's file: zeros, its regions' bytes read into place CHUNK at a time."""
        if sparse.error is not None:
            raise Unusable(sparse.error)
        regions = sparse.regions if sparse.regions is not None else self._sparse_map(entry)
        end = 0
        for start, length in regions:
            if start < end or start + length > sparse.realsize:
                raise Unusable("is a GNU sparse file whose regions overlap, go backwards or pass its size")
            end = start + length
        if sum(length for _, length in regions) != entry.left:
            raise Unusable(f"is a GNU sparse file whose regions do not add up to its {entry.left:,} bytes of data")
        out = bytearray(sparse.realsize)
        for start, length in regions:
            while length:
                part = self._read(min(length, CHUNK))
                if not part:
                    raise ShardError(f"truncated at byte {self.offset}: the shard ends inside a member")
                out[start : start + len(part)] = part
                start, length, entry.left = start + len(part), length - len(part), entry.left - len(part)
        return bytes(out)

    def _sparse_map(self, entry: Entry) -> list[tuple[int, int]]:
        """PAX 1.0's map, decimal lines at the start of the data (a count, then offset and length of each region),
        padded to a block: read a block at a time, never more than MAX_SPARSE_REGIONS regions' worth."""
        numbers: list[int] = []
        text, wanted = b"", None
        while wanted is None or len(numbers) < wanted:
            if entry.left < BLOCK:
                raise Unusable("is a GNU sparse file whose map runs past its data")
            text += self._exact(BLOCK)
            entry.left -= BLOCK
            *lines, text = text.split(b"\n")
            for line in lines:
                if not line.isdigit() or len(line) > MAX_DECIMAL:
                    raise Unusable("is a GNU sparse file whose map is not decimal numbers")
                if wanted is None:
                    if int(line) > MAX_SPARSE_REGIONS:
                        raise Unusable(f"is a GNU sparse file of {int(line):,} regions, over {MAX_SPARSE_REGIONS:,}")
                    wanted = 2 * int(line)
                elif len(numbers) < wanted:
                    numbers.append(int(line))
            if (wanted is None or len(numbers) < wanted) and len(text) > MAX_DECIMAL:
                raise Unusable("is a GNU sparse file whose map is not decimal numbers")
        return list(zip(numbers[0::2], numbers[1::2]))

    def entries(self) -> Iterator[Entry]:
        """Files, links and sparse files in archive order; whatever data the consumer did not read is skipped."""
        pending: dict = {}
        longname = extended_at = None
        while True:
            header = self._header()
            if header is None:
                if extended_at is not None:
                    raise ShardError(f"not a tar: the extended header at byte {extended_at} has no member after it")
                return
            offset, block, kind, size = header
            if kind in EXTENDED:
                extended_at = offset
                if kind == ord("x"):
                    self._pax(offset, size, pending)
                elif kind == ord("L"):
                    longname = self._longname(offset, size)
                else:
                    self._bounded_skip(offset, size, kind)
                continue
            sparse = self._gnu_sparse(block, offset) if kind == GNU_SPARSE else _pax_sparse(pending)
            name = pending.get("name") or pending.get("path") or longname or _name(block)
            size = pending.get("size", size)
            pending, longname, extended_at = {}, None, None
            entry = Entry(name, kind, size, offset, size, sparse)
            if (kind in FILES or kind == GNU_SPARSE) and not name.endswith(b"/") or kind in LINKS:
                yield entry
            self._skip(entry.left + (-size) % BLOCK)

    def _header(self) -> tuple[int, bytes, int, int] | None:
        """(offset, block, typeflag, size) of the next header, or None at the end of the archive."""
        offset = self.offset
        block = self._read(BLOCK)
        if not block:
            if offset == 0:
                raise ShardError("not a tar: the shard is empty")
            raise ShardError(f"truncated at byte {offset}: the shard ends without its end-of-archive blocks")
        if len(block) < BLOCK:
            raise ShardError(f"truncated at byte {self.offset}: the shard ends inside a header")
        if block == ZERO_BLOCK:
            after = self._read(BLOCK)
            if after.strip(b"\x00"):
                raise ShardError(f"not a tar: a lone zero block at byte {offset} is followed by data")
            return None
        if not _checksum_ok(block):
            raise ShardError(f"not a tar: bad header checksum at byte {offset}")
        return offset, block, block[156], _size(block, offset)

    def _pax(self, offset: int, size: int, pending: dict) -> None:
        """`path`, `size` and the GNU.sparse.* records of a pax extended header into `pending` (the other records
        are read and not used); the header's own bound bounds what they can hold."""
        data = self._extended(offset, size, MAX_PAX_BYTES, "pax header")
        pos = 0
        while pos < len(data):
            space = data.find(b" ", pos, pos + 21)
            digits = data[pos:space] if space > pos else b""
            if not digits.isdigit() or int(digits) <= len(digits) + 1 or pos + int(digits) > len(data):
                raise ShardError(f"not a tar: bad pax header at byte {offset}")
            record, pos = data[space + 1 : pos + int(digits)], pos + int(digits)
            keyword, equals, value = record.partition(b"=")
            if not equals or not record.endswith(b"\n"):
                raise ShardError(f"not a tar: bad pax header at byte {offset}")
            value = value[:-1]
            if keyword == b"path":
                pending["path"] = value
            elif keyword == b"size":
                pending["size"] = _decimal(value, offset, "size")
            elif keyword in (b"GNU.sparse.name", b"GNU.sparse.major", b"GNU.sparse.minor", b"GNU.sparse.map"):
                pending[keyword.decode()[11:]] = value
            elif keyword in (b"GNU.sparse.size", b"GNU.sparse.realsize"):
                pending["realsize"] = _decimal(value, offset, keyword.decode())
            elif keyword in (b"GNU.sparse.offset", b"GNU.sparse.numbytes"):  # PAX 0.0: one pair per region
                pending.setdefault(keyword.decode()[11:], []).append(_decimal(value, offset, keyword.decode()))

    def _gnu_sparse(self, block: bytes, offset: int) -> Sparse:
        """An old GNU sparse header's real size and regions: four in the header, 21 in each extension block after
        it (read here, before the data, whether or not the member is used)."""
        regions: list[tuple[int, int]] = []
        fields = [block[386 + 24 * i : 410 + 24 * i] for i in range(4)]
        extended = block[482]
        while True:
            for field in fields:
                if field.strip(b"\x00"):
                    regions.append((_number(field[:12], offset), _number(field[12:], offset)))
                    del regions[MAX_SPARSE_REGIONS + 1 :]  # past the bound only "too many" is kept
            if not extended:
                break
            more = self._read(BLOCK)
            if len(more) < BLOCK:
                raise ShardError(f"truncated at byte {self.offset}: the shard ends inside a sparse header")
            fields, extended = [more[24 * i : 24 * i + 24] for i in range(21)], more[504]
        if len(regions) > MAX_SPARSE_REGIONS:
            return Sparse(0, [], f"is a GNU sparse file of over {MAX_SPARSE_REGIONS:,} regions")
        return Sparse(_number(block[483:495], offset), regions)

    def _longname(self, offset: int, size: int) -> bytes:
        return self._extended(offset, size, MAX_LONGNAME_BYTES, "GNU long name").split(b"\x00", 1)[0]

    def _extended(self, offset: int, size: int, limit: int, what: str) -> bytes:
        if size > limit:
            raise ShardError(f"not a usable tar: the {what} at byte {offset} is {size:,} bytes, over {limit:,}")
        data = self._exact(size)
        self._skip((-size) % BLOCK)
        return data

    def _bounded_skip(self, offset: int, size: int, kind: int) -> None:
        """A pax global header or a GNU long link name: capped like the headers that are read, then dropped."""
        limit = MAX_PAX_BYTES if kind == ord("g") else MAX_LONGNAME_BYTES
        if size > limit:
            raise ShardError(
                f"not a usable tar: the {chr(kind)!r} header at byte {offset} is {size:,} bytes, over {limit:,}"
            )
        self._skip(size + (-size) % BLOCK)


def _checksum_ok(block: bytes) -> bool:
    """The header's checksum: the sum of its bytes with the checksum field as spaces (unsigned, or signed as some
    old tars wrote it)."""
    field = block[148:156].replace(b"\x00", b" ").strip()
    if not field or any(c not in b"01234567" for c in field):
        return False
    stored = int(field, 8)
    unsigned = sum(block[:148]) + sum(block[156:]) + 8 * 32
    signed = sum(struct.unpack("148b8x356b", block)) + 8 * 32
    return stored in (unsigned, signed)


def _size(block: bytes, offset: int) -> int:
    """The size field: octal, or GNU base-256 (high bit set) for sizes over 8 GiB."""
    return _number(block[124:136], offset)


def _number(field: bytes, offset: int) -> int:
    """A numeric header field: octal, or GNU base-256 (high bit set)."""
    if field[0] & 0x80:
        if field[0] == 0xFF:
            raise ShardError(f"not a tar: negative size at byte {offset}")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if text and any(c not in b"01234567" for c in text):
        raise ShardError(f"not a tar: bad size field at byte {offset}")
    return int(text, 8) if text else 0


def _decimal(value: bytes, offset: int, what: str) -> int:
    if not value.isdigit() or len(value) > MAX_DECIMAL:
        raise ShardError(f"not a tar: bad pax {what} {value[:40]!r} at byte {offset}")
    return int(value)


def _pax_sparse(pending: dict) -> Sparse | None:
    """The layout the GNU.sparse.* records of a pax header give (None: a plain member), as `tarfile` reads them."""
    if "realsize" not in pending and "major" not in pending and "map" not in pending and "offset" not in pending:
        return None
    realsize = pending.get("realsize")
    if realsize is None:
        return Sparse(0, [], "is a GNU sparse file without its real size")
    if pending.get("major") is not None:
        if (pending.get("major"), pending.get("minor")) != (b"1", b"0"):
            return Sparse(0, [], "is a GNU sparse file of a version other than 0.0, 0.1 and 1.0")
        return Sparse(realsize, None)
    if "map" in pending:
        numbers = pending["map"].split(b",") if pending["map"] else []
        if len(numbers) % 2 or not all(n.isdigit() and len(n) <= MAX_DECIMAL for n in numbers):
            return Sparse(0, [], "is a GNU sparse file whose map is not pairs of decimal numbers")
        pairs = [int(n) for n in numbers]
    else:
        offsets, lengths = pending.get("offset", []), pending.get("numbytes", [])
        if len(offsets) != len(lengths):
            return Sparse(0, [], "is a GNU sparse file whose offsets and lengths do not pair up")
        pairs = [n for pair in zip(offsets, lengths) for n in pair]
    if len(pairs) > 2 * MAX_SPARSE_REGIONS:
        return Sparse(0, [], f"is a GNU sparse file of over {MAX_SPARSE_REGIONS:,} regions")
    return Sparse(realsize, list(zip(pairs[0::2], pairs[1::2])))


def _name(block: bytes) -> bytes:
    """name, under the POSIX ustar prefix (GNU tar uses those bytes for other fields, so only with ustar's magic)."""
    name = block[:100].split(b"\x00", 1)[0]
    prefix = block[345:500].split(b"\x00", 1)[0]
    return prefix + b"/" + name if block[257:263] == b"ustar\x00" and prefix else name
