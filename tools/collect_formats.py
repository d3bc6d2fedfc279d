"""The files `make collect` writes: the caption table (runtime/caption_table.py: `.jsonl`, `.csv`, `.parquet` by
extension, errors as rows) or Hugging Face's imagefolder layout (`--format imagefolder`, OUT a folder)."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.caption_table import COLUMNS, EXTENSIONS, OutputRefused, TableWriter, check_out

# imagefolder: metadata.jsonl next to the images, `file_name` relative to it, the caption as `text`
# (https://huggingface.co/docs/datasets/en/image_dataset). Under train/ because a metadata file at the
# root of a folder was ignored by datasets 2.15 (https://github.com/huggingface/datasets/issues/6442).
SPLIT, METADATA, FILE_NAME, TEXT = "train", "metadata.jsonl", "file_name", "text"
IMAGEFOLDER = "imagefolder"
OVERWRITE_FLAG = "--overwrite (make: FORCE=1)"


class Table:
    """Every row, caption or error, into one caption table file."""

    needs_images = False

    def __init__(self, out: Path, overwrite: bool = False) -> None:
        self.writer = TableWriter(check_out(out, overwrite=overwrite, flag=OVERWRITE_FLAG))

    def caption(self, row: dict, image: bytes | None = None) -> None:
        self.writer.write(row)

    error = caption

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


class ImageFolder:
    """`out/train/<key>` for each captioned image and `out/train/metadata.jsonl` (HF's layout needs a file per
    row, so the error rows go to `out/errors.jsonl`, in the caption table's columns)."""

    needs_images = True

    def __init__(self, out: Path) -> None:
        self.root = Path(out) / SPLIT
        self.root.mkdir(parents=True, exist_ok=True)
        self.metadata = open(self.root / METADATA, "w", encoding="utf-8")
        self.errors = open(Path(out) / "errors.jsonl", "w", encoding="utf-8")

    def caption(self, row: dict, image: bytes | None = None) -> None:
        relative = Path(row["key"])
        if relative.is_absolute() or ".." in relative.parts or relative.name == METADATA:
            raise ValueError(f"{row['uri']}: cannot be stored as {relative} inside {self.root}")
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image)
        self.metadata.write(
            json.dumps(
                {
                    FILE_NAME: relative.as_posix(),
                    TEXT: row["caption"],
                    **{k: row[k] for k in COLUMNS if k not in ("key", "caption", "error")},
                },
                ensure_ascii=False,
            )
            + "\n"
        )

    def error(self, row: dict) -> None:
        self.errors.write(json.dumps({k: row.get(k) for k in COLUMNS}, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.metadata.close()
        self.errors.close()

    abort = close


def formats() -> list[str]:
    return [e.lstrip(".") for e in EXTENSIONS] + [IMAGEFOLDER]


def check_output(out: Path, fmt: str | None, overwrite: bool = False) -> None:
    """OutputRefused unless OUT may be written: its extension decides (`fmt` may only confirm it, or ask for
    imagefolder), and an earlier run's file or non-empty folder is kept unless `overwrite`."""
    if fmt == IMAGEFOLDER:
        if Path(out).is_dir() and any(Path(out).iterdir()) and not overwrite:
            raise OutputRefused(
                f"{out} exists and is not empty (an earlier run's output); choose another folder "
                f"or pass {OVERWRITE_FLAG}"
            )
        return
    suffix = Path(out).suffix.lower().lstrip(".")
    if fmt is not None and fmt != suffix:
        raise OutputRefused(
            f"--format {fmt} but OUT is {out}: the extension decides the format; name it .{fmt} or drop FORMAT"
        )
    check_out(out, overwrite=overwrite, flag=OVERWRITE_FLAG)


def open_output(out: Path, fmt: str | None, overwrite: bool = False):
    """The writer for OUT, once `check_output` allows it."""
    check_output(out, fmt, overwrite)
    return ImageFolder(out) if fmt == IMAGEFOLDER else Table(out, overwrite)
