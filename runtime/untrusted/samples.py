"""A sample of a dataset shard, the error that fails a shard whole, and which shard formats are read."""

from __future__ import annotations

import dataclasses
import posixpath

from runtime.errors import CaptionKitError

SHARD_FORMATS = {".tar": "tar", ".parquet": "parquet"}
MAX_KEY_BYTES = 1024  # a longer sample key (UTF-8) is an error row: keys end up in URIs and output rows


@dataclasses.dataclass(frozen=True)
class Sample:
    """One sample of a shard, in shard order: its image bytes, or why it cannot be used (then `data` is None).

    An unusable sample (no image member, too large, an undecodable key) is an error row of the output, never a lost
    sample nor a failed shard.
    """

    key: str
    index: int
    data: bytes | None
    error: str | None = None


class ShardError(CaptionKitError):
    """The shard cannot be read at all (not a tar or Parquet file, truncated, no image column, too many samples).

    The shard fails whole with this message, and retrying it unchanged cannot help: a permanent failure.
    """


def shard_format(key: str) -> str | None:
    """ "tar" or "parquet" for a key that names a shard (by its extension, case-insensitive), else None."""
    return SHARD_FORMATS.get(posixpath.splitext(key)[1].lower())
