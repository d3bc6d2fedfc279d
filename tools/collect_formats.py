"""The three shapes `make collect` writes: JSON Lines, Parquet (pyarrow), and Hugging Face's imagefolder layout.

Each writer takes caption rows one at a time (nothing is held beyond one Parquet row group) and writes error
rows to a separate JSON Lines file, never mixed with the captions.
"""
from __future__ import annotations

import json
from pathlib import Path

# One row of captions; the Parquet schema and the JSON Lines keys are these, in this order.
CAPTION_COLUMNS = ("image", "caption", "model", "model_sha256")
ERROR_COLUMNS = ("image", "error")
ROW_GROUP = 1000
# imagefolder: metadata.jsonl next to the images, `file_name` relative to it, the caption as `text`
# (https://huggingface.co/docs/datasets/en/image_dataset). Under train/ because a metadata file at the
# root of a folder was ignored by datasets 2.15 (https://github.com/huggingface/datasets/issues/6442).
SPLIT, METADATA, FILE_NAME, TEXT = "train", "metadata.jsonl", "file_name", "text"


def _jsonl(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w", encoding="utf-8")


def _dump(handle, row: dict) -> None:
    handle.write(json.dumps(row, ensure_ascii=False) + "\n")


class JsonLines:
    """`out` holds one caption row per line; `<out stem>.errors.jsonl` one error row per line."""

    needs_images = False

    def __init__(self, out: Path) -> None:
        self.out, self.errors_path = Path(out), Path(out).with_suffix(".errors.jsonl")
        self.captions, self.errors = _jsonl(self.out), _jsonl(self.errors_path)

    def caption(self, row: dict, image: bytes | None = None) -> None:
        _dump(self.captions, {k: row[k] for k in CAPTION_COLUMNS})

    def error(self, row: dict) -> None:
        _dump(self.errors, {k: row[k] for k in ERROR_COLUMNS})

    def close(self) -> None:
        self.captions.close()
        self.errors.close()


class Parquet(JsonLines):
    """`out` is a Parquet file of string columns CAPTION_COLUMNS, written a row group at a time."""

    def __init__(self, out: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.out, self.errors_path = Path(out), Path(out).with_suffix(".errors.jsonl")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.schema = pa.schema([(name, pa.string()) for name in CAPTION_COLUMNS])
        self.writer, self.errors, self.pending = pq.ParquetWriter(self.out, self.schema), _jsonl(self.errors_path), []

    def caption(self, row: dict, image: bytes | None = None) -> None:
        self.pending.append({k: row[k] for k in CAPTION_COLUMNS})
        if len(self.pending) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.pending:
            self.writer.write_table(pa.Table.from_pylist(self.pending, schema=self.schema))
            self.pending = []

    def close(self) -> None:
        self._flush()
        self.writer.close()
        self.errors.close()


class ImageFolder:
    """`out/train/<path>` for each captioned image and `out/train/metadata.jsonl`; errors in `out/errors.jsonl`."""

    needs_images = True

    def __init__(self, out: Path) -> None:
        self.root = Path(out) / SPLIT
        self.errors_path = Path(out) / "errors.jsonl"
        self.metadata, self.errors = _jsonl(self.root / METADATA), _jsonl(self.errors_path)

    def caption(self, row: dict, image: bytes | None = None) -> None:
        relative = Path(row["relative"])
        if relative.is_absolute() or ".." in relative.parts or relative.name == METADATA:
            raise ValueError(f"{row['image']}: cannot be stored as {relative} inside {self.root}")
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image)
        _dump(self.metadata, {FILE_NAME: relative.as_posix(), TEXT: row["caption"],
                              **{k: row[k] for k in CAPTION_COLUMNS if k != "caption"}})

    def error(self, row: dict) -> None:
        _dump(self.errors, {k: row[k] for k in ERROR_COLUMNS})

    def close(self) -> None:
        self.metadata.close()
        self.errors.close()


FORMATS = {"jsonl": JsonLines, "parquet": Parquet, "imagefolder": ImageFolder}


def guess_format(out: str) -> str:
    """jsonl by default, parquet for `*.parquet`; imagefolder only when asked (OUT is then a folder)."""
    return "parquet" if str(out).endswith(".parquet") else "jsonl"
