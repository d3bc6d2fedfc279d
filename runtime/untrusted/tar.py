"""A bounded streaming reader of webdataset tar shards: samples out of a non-seekable stream, never the whole shard.

The archive's members come from runtime.untrusted.tar_archive (every header bounded before it is read); here they
are grouped into samples, each image bounded by max_member_bytes before its bytes are read.

What the reader decides, where the formats leave it open:
- grouping is webdataset's: the key is the path up to the first '.' of its basename ("a/b/000123.seg.png" has key
  "a/b/000123" and extension "seg.png"), consecutive members with one key are one sample; a member with no stem or
  no extension ("README", ".hidden") belongs to no sample, as in webdataset; hard links and symlinks join their
  sample's grouping but are never read (a sample whose image is a link says so in its error row); a sparse image
  whose map is not valid is its sample's error row;
- a sample keeps its image, a count of its members and the names of its first MAX_LISTED (for its error row), so
  memory does not grow with its members; one of more than MAX_SAMPLE_MEMBERS members is an error row;
- the image is the first member whose extension is exactly an accepted image type's (runtime.images.formats:
  jpg, jpeg, png, webp, gif, bmp, tif, tiff; any case); failing that, the first
  whose last suffix is one ("x.seg.png"), so a mask is captioned only where the sample has no plain image.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

from runtime.images import formats
from runtime.untrusted.samples import MAX_KEY_BYTES, Sample, ShardError
from runtime.untrusted.tar_archive import LINKS, Archive, Entry, Unusable

MAX_LISTED = 10  # members named in a "no image" error row
MAX_SHOWN = 64  # characters of a member's extension kept to name it there
MAX_SAMPLE_MEMBERS = 1000  # members of one sample: past it, the sample is an error row
IMAGE_SUFFIXES = frozenset(suffix[1:].encode() for suffix in formats.IMAGE_SUFFIXES)  # b"jpg", b"png", ...


def _split(name: bytes) -> tuple[bytes, bytes] | None:
    """(key, extension) of a member path, webdataset's way; None for a member that belongs to no sample."""
    folder, slash, base = name.rpartition(b"/")
    stem, dot, extension = base.partition(b".")
    if not stem or not extension:
        return None
    return folder + slash + stem, extension


class _Group:
    """The members of one sample as they stream by: only its image is kept, at most one fallback image with it, and
    the names of its first MAX_LISTED members; the rest is counted, so memory does not grow with the members."""

    def __init__(self, key: bytes):
        self.key = key
        self.count = 0
        self.listed: list[str] = []
        self.rank = 2  # of the image held: 0 an exact image extension, 1 a last suffix only, 2 none yet
        self.image: bytes | None = None
        self.refusal: str | None = None  # why the chosen image member cannot be used

    def add(self, archive: Archive, entry: Entry, extension: bytes, max_member_bytes: int) -> None:
        self.count += 1
        if self.count > MAX_SAMPLE_MEMBERS:
            self.rank, self.image = -1, None  # no member of it is read any more
            self.refusal = f"the sample has more than {MAX_SAMPLE_MEMBERS:,} members"
            return
        link = LINKS.get(entry.kind)
        if len(self.listed) < MAX_LISTED:
            shown = "." + extension[:MAX_SHOWN].decode("utf-8", "backslashreplace")
            shown += "..." if len(extension) > MAX_SHOWN else ""
            self.listed.append(f"{shown} ({link})" if link else shown)
        if link:
            return
        lowered = extension.lower()
        rank = 0 if lowered in IMAGE_SUFFIXES else 1 if lowered.rpartition(b".")[2] in IMAGE_SUFFIXES else 2
        if rank >= self.rank:
            return
        self.rank, self.image, self.refusal = rank, None, None
        shown = "." + extension[:MAX_SHOWN].decode("utf-8", "backslashreplace")
        if entry.sparse is not None and entry.sparse.error is not None:
            self.refusal = f"the {shown} member {entry.sparse.error}"
        elif entry.real_size > max_member_bytes:
            self.refusal = (
                f"the {shown} member is {entry.real_size:,} bytes, over the limit of {max_member_bytes:,} "
                f"(max_image_bytes)"
            )
        else:
            try:
                self.image = archive.data(entry)
            except Unusable as exc:
                self.refusal = f"the {shown} member {exc}"

    def sample(self, index: int) -> Sample:
        raw = self.key
        key = raw[:MAX_KEY_BYTES].decode("utf-8", "backslashreplace")
        if len(raw) > MAX_KEY_BYTES:
            return Sample(key, index, None, f"key of {len(raw):,} bytes, over the limit of {MAX_KEY_BYTES:,}")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return Sample(key, index, None, f"key is not valid UTF-8: {raw!r}")
        if self.refusal is not None:
            return Sample(key, index, None, self.refusal)
        if self.image is None:
            listed = ", ".join(self.listed)
            more = f" and {self.count - MAX_LISTED} more" if self.count > MAX_LISTED else ""
            return Sample(key, index, None, f"no image in sample (members: {listed}{more})")
        return Sample(key, index, self.image, None)


def iter_samples(stream: BinaryIO, *, max_member_bytes: int, max_samples: int) -> Iterator[Sample]:
    """The samples of a webdataset tar shard in order, read from `stream` with read(n) only, n <= CHUNK.

    A sample that cannot be used is a Sample with its error (no image, an image over max_member_bytes, a bad key);
    a shard that cannot be read at all raises ShardError (not a tar, truncated, more than max_samples samples).
    """
    archive = Archive(stream)
    group: _Group | None = None
    index = 0
    for entry in archive.entries():
        split = _split(entry.name)
        if split is None:
            continue
        key, extension = split
        if group is None or key != group.key:
            if group is not None:
                yield _counted(group, index, max_samples)
                index += 1
            group = _Group(key)
        group.add(archive, entry, extension, max_member_bytes)
    if group is not None:
        yield _counted(group, index, max_samples)


def _counted(group: _Group, index: int, max_samples: int) -> Sample:
    if index >= max_samples:
        raise ShardError(f"the shard has more than {max_samples:,} samples (max_shard_samples)")
    return group.sample(index)
