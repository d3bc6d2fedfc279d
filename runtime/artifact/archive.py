"""Read a .pt2 archive's records as bounded byte ranges of the file, with no decompression and no torch loader.

torch writes every record of a PT2 archive stored (uncompressed), each under one root folder; so does the
exporter. The reader refuses anything else before a byte of a record is read: a compressed or encrypted entry
(a 6 MB file can inflate to gigabytes), duplicate names, an entry whose bytes lie outside the file, a record
over its caller's size cap. Records are then plain `(offset, size)` ranges of the file, read with `read`.
The archive constants come from torch's C++ side (`torch._C._export.pt2_archive_constants`), so nothing here
imports `torch.export` (its deserializer pulls in `torch._dynamo`).
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

from torch._C._export import pt2_archive_constants as _constants

from runtime.errors import ArtifactError

EXTRA_DIR: str = _constants.EXTRA_DIR  # "extra/": an archive's extra files (manifest, tokenizer)
WEIGHTS_CONFIG: str = _constants.WEIGHTS_CONFIG_FILENAME_FORMAT  # "data/weights/{}_weights_config.json"
WEIGHTS_DIR: str = _constants.WEIGHTS_DIR
CONSTANTS_CONFIG: str = _constants.CONSTANTS_CONFIG_FILENAME_FORMAT
CONSTANTS_DIR: str = _constants.CONSTANTS_DIR

MAX_ENTRIES = 100_000
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then the name and extra-field lengths at offset 26


class ArchiveReader:
    """The stored records of one PT2 archive, by name without the root folder, as ranges of the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file_size = self.path.stat().st_size
        with zipfile.ZipFile(self.path) as archive:
            infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise ValueError(f"{len(infos)} entries (at most {MAX_ENTRIES})")
        roots = {info.filename.split("/", 1)[0] for info in infos}
        if len(roots) != 1 or any("/" not in info.filename for info in infos):
            raise ValueError(f"entries under {len(roots)} root folders, a PT2 archive has one")
        self._entries: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename.split("/", 1)[1]
            if name in self._entries:
                raise ValueError(f"entry {name!r} appears twice")
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise ValueError(f"entry {name!r} is compressed or encrypted; torch writes every record stored")
            if info.compress_size != info.file_size or info.header_offset + info.file_size > self.file_size:
                raise ValueError(f"entry {name!r} claims {info.file_size} bytes past the end of the file")
            self._entries[name] = info
        self._regions: dict[str, tuple[int, int]] = {}
        if self.read_string(_constants.ARCHIVE_FORMAT_PATH, 64) != _constants.ARCHIVE_FORMAT_VALUE:
            raise ValueError("its archive_format record is not a PT2 archive's")

    def names(self) -> list[str]:
        return list(self._entries)

    def has_record(self, name: str) -> bool:
        return name in self._entries

    def region(self, name: str) -> tuple[int, int]:
        """(offset, size) of a record's bytes in the file, checked to lie inside it."""
        if name not in self._regions:
            info = self._entries.get(name)
            if info is None:
                raise ArtifactError(f"{self.path}: has no record {name!r}")
            with open(self.path, "rb") as f:
                f.seek(info.header_offset)
                signature, name_len, extra_len = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
            offset = info.header_offset + 30 + name_len + extra_len
            if signature != b"PK\x03\x04" or offset + info.file_size > self.file_size:
                raise ArtifactError(f"{self.path}: record {name!r} has a damaged header or ends past the file")
            self._regions[name] = (offset, info.file_size)
        return self._regions[name]

    def read_bytes(self, name: str, limit: int) -> bytes:
        """The record's bytes; refused when it is over `limit` bytes (checked before anything is read)."""
        size = self._entries[name].file_size if name in self._entries else 0
        if size > limit:
            raise ArtifactError(
                f"{self.path}: record {name!r} is {size} bytes, over the {limit}-byte limit "
                "for it; this is not an artifact CaptionKit wrote"
            )
        offset, size = self.region(name)
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise ArtifactError(f"{self.path}: ends inside record {name!r}")
        return data

    def read_string(self, name: str, limit: int) -> str:
        try:
            return self.read_bytes(name, limit).decode()
        except UnicodeDecodeError as exc:
            raise ArtifactError(f"{self.path}: record {name!r} is not UTF-8 text ({exc.reason})") from None


def open_archive(path: Path) -> ArchiveReader:
    """The archive at `path`, or an ArtifactError saying why it cannot be one."""
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file")
    try:
        return ArchiveReader(path)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error) as exc:
        raise ArtifactError(
            f"{path}: not a complete PT2 archive (truncated download or not a .pt2 file?): {exc}; "
            "download or export it again"
        ) from None
