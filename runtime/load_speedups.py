"""Work-arounds that make `torch.export` deserialization faster, each scoped to one load and to the torch it was checked on.

torch 2.13's schema deserializer (`torch._export.serde.serialize._dict_to_dataclass`) calls
`typing.get_type_hints(cls, globalns=vars(schema))` for every dataclass and union object it builds: tens of
thousands of calls for a few dozen schema classes, about half of `load_pt2`'s time on the base-size artifact
(pytorch/pytorch#196452, open: https://github.com/pytorch/pytorch/issues/196452). PR #184787 moves schema
deserialization to C++ (https://github.com/pytorch/pytorch/pull/184787); once the pinned torch has it, this
memo no longer applies (the version guard turns it off) and this module can go.
"""
from __future__ import annotations

import contextlib
import types
import typing

import torch

# the releases whose serialize.py was read for this (2.13.0: _dict_to_dataclass, lines ~3715-3760)
CHECKED_TORCH = ("2.13.",)


def applies(version: str | None = None) -> bool:
    """Whether the memo is known to be right for this torch (its serde still resolves type hints per object)."""
    return (version or torch.__version__).startswith(CHECKED_TORCH)


class _MemoTyping(types.ModuleType):
    """`typing` as serialize.py sees it during a load: `get_type_hints` for a schema class is looked up once."""

    def __init__(self, schema_globals: dict):
        super().__init__("typing")
        self.__dict__.update({k: v for k, v in vars(typing).items() if k != "get_type_hints"})  # plain lookups
        self._schema_globals, self._hints = schema_globals, {}

    def __getattr__(self, name):  # anything typing gains later is still typing's own
        return getattr(typing, name)

    def get_type_hints(self, obj, globalns=None, localns=None, include_extras=False):
        if globalns is not self._schema_globals or localns is not None or include_extras:
            return typing.get_type_hints(obj, globalns, localns, include_extras)
        hints = self._hints.get(obj)
        if hints is None:  # schema classes are fixed at import: their hints cannot change during a load
            hints = self._hints[obj] = typing.get_type_hints(obj, globalns)
        return hints


@contextlib.contextmanager
def memoized_schema_type_hints():
    """Within the block, serialize.py's type-hint lookups for schema classes are memoized (no-op on other torch)."""
    if not applies():
        yield
        return
    from torch._export.serde import schema, serialize

    original = serialize.typing
    serialize.typing = _MemoTyping(vars(schema))
    try:
        yield
    finally:
        serialize.typing = original


# Weights memory-mapped instead of read: torch's reader (PT2ArchiveReader.archive_file.get_storage_from_record)
# copies every weight record out of the file into a fresh buffer. Records are stored uncompressed at 64-byte
# aligned offsets, so a copy-on-write mapping of the file can back each weight in place, as safetensors does for
# from_pretrained. Measured in bench.load_phases and by whole processes (BENCHMARKS.md, issue 16): the load's
# weight phase fell from about 0.95 s to 0.3 s, but the first caption then faults the pages in, and on this
# shared 2-core machine no whole-process gain showed (1.07x vs 1.10x against HF, within the noise) and peak
# RSS was the same (the first caption touches every weight). So it is off; `load_programs(map_weights=True)`
# and `bench.load_phases --variants runtime runtime_map` measure it again on another machine.
# Writes to a weight stay private to the process (ACCESS_COPY); the file is never written.
MAP_WEIGHTS = False


class _MappedRecords:
    """`archive_file` whose weight storages are views of a private (copy-on-write) mapping of the file."""

    def __init__(self, inner, path: str):
        import mmap

        self._inner = inner
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def get_storage_from_record(self, name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
        offset = self._inner.get_record_offset(name)
        if offset % torch._utils._element_size(dtype):
            return self._inner.get_storage_from_record(name, numel, dtype)
        return torch.frombuffer(self._map, dtype=dtype, count=numel, offset=offset)


@contextlib.contextmanager
def mapped_weights(path: str, enabled: bool = True):
    """Within the block, load_pt2 of `path` maps weight records instead of copying them (no-op on other torch)."""
    if not (enabled and applies()):
        yield
        return
    from torch.export.pt2_archive import _package

    original = _package.PT2ArchiveReader

    class MappedReader(original):
        def __init__(self, archive_path_or_buffer):
            super().__init__(archive_path_or_buffer)
            if isinstance(archive_path_or_buffer, str) and archive_path_or_buffer == path:
                self.archive_file = _MappedRecords(self.archive_file, path)

    _package.PT2ArchiveReader = MappedReader
    try:
        yield
    finally:
        _package.PT2ArchiveReader = original
