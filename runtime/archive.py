"""Read a .pt2 archive's records without importing torch's export package.

`torch.export.pt2_archive` imports torch's schema deserializer and, through it, `torch._dynamo`: about 1.9 s
of a cold process on this project's 2-core machine (BENCHMARKS.md, issue 16), all before the first record is
read. Reading the manifest, checking the archive format and finding record offsets need only torch's C++ zip
reader (`torch._C.PyTorchFileReader`, the one `PT2ArchiveReader` wraps) and the archive constants torch's
Python module re-exports from C++ (`torch._C._export.pt2_archive_constants`); those are used here, so a load
served from the graph cache (runtime.graph_cache) never imports the deserializer at all.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch._C._export import pt2_archive_constants as _constants

from runtime.errors import ArtifactError

EXTRA_DIR: str = _constants.EXTRA_DIR  # "extra/": an archive's extra files (manifest, tokenizer)
WEIGHTS_CONFIG: str = _constants.WEIGHTS_CONFIG_FILENAME_FORMAT  # "data/weights/{}_weights_config.json"
WEIGHTS_DIR: str = _constants.WEIGHTS_DIR
CONSTANTS_CONFIG: str = _constants.CONSTANTS_CONFIG_FILENAME_FORMAT
CONSTANTS_DIR: str = _constants.CONSTANTS_DIR


class ArchiveReader:
    """The records of one PT2 archive: as `torch.export.pt2_archive.PT2ArchiveReader` checks and reads them."""

    def __init__(self, path: str | Path):
        self.archive_file = torch._C.PyTorchFileReader(str(path))
        if self.read_string(_constants.ARCHIVE_FORMAT_PATH) != _constants.ARCHIVE_FORMAT_VALUE:
            raise AssertionError("Invalid archive format")

    def has_record(self, name: str) -> bool:
        return self.archive_file.has_record(name)

    def read_bytes(self, name: str) -> bytes:
        return self.archive_file.get_record(name)

    def read_string(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def region(self, name: str) -> tuple[int, int]:
        """(offset, size) of a stored (uncompressed) record's bytes in the file."""
        return self.archive_file.get_record_offset(name), self.archive_file.get_record_size(name)


def open_archive(path: Path) -> ArchiveReader:
    """The archive at `path`, or an ArtifactError saying why it cannot be one."""
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file")
    try:
        return ArchiveReader(path)
    except Exception as exc:  # torch raises RuntimeError/AssertionError for a damaged zip
        raise ArtifactError(
            f"{path}: not a complete PT2 archive (truncated download or not a .pt2 file?): {exc}; "
            "download or export it again"
        ) from None
