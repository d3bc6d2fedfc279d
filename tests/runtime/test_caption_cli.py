"""The caption CLI as a laptop tool: folders, globs, a table file by extension, UTF-8, one-line refusals."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from export.cli import parity_images
from runtime.caption_table import COLUMNS

ROOT = Path(__file__).resolve().parents[2]


def caption(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LC_ALL": "C", "PYTHONIOENCODING": ""}
    return subprocess.run(
        [sys.executable, "-m", "runtime", "caption", *args], cwd=cwd, capture_output=True, env=env, timeout=300
    )


@pytest.fixture
def photos(tmp_path) -> Path:
    """photos/: two images at the top, one in a sub-folder with a non-ASCII name, two files that are not images."""
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    images = parity_images([], 3)
    images[0].save(root / "a.png")
    images[1].save(root / "B.JPG")
    images[2].save(root / "trip" / "café.png")
    (root / "notes.txt").write_text("not an image")
    (root / "trip" / ".DS_Store").write_bytes(b"\0")
    return root


@pytest.mark.parametrize("ext", [".csv", ".parquet", ".jsonl"])
def test_a_folder_is_captioned_recursively_into_the_table_its_extension_names(tiny_artifact, photos, tmp_path, ext):
    out = tmp_path / f"captions{ext}"
    run = caption("--artifact", str(tiny_artifact), "--cache", str(tmp_path / "cache"), "--out", str(out), str(photos))
    stderr = run.stderr.decode()
    assert run.returncode == 0, stderr
    assert run.stdout == b"" and "Traceback" not in stderr
    assert "skipped 2 file(s) that are not images" in stderr
    assert "3/3" in stderr.splitlines()[-2]  # the bar's final state, then the summary line
    if ext == ".csv":
        with open(out, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        assert tuple(rows[0]) == COLUMNS
    elif ext == ".parquet":
        table = pq.read_table(out)
        assert tuple(table.column_names) == COLUMNS
        rows = table.to_pylist()
    else:
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert "café" in out.read_text(encoding="utf-8")
    assert sorted(r["key"] for r in rows) == ["B.JPG", "a.png", "trip/café.png"]
    assert {r["uri"] for r in rows} == {str(photos / "a.png"), str(photos / "B.JPG"), str(photos / "trip/café.png")}
    no_error = "" if ext == ".csv" else None  # CSV has no null: an empty cell
    assert all(isinstance(r["caption"], str) and r["error"] == no_error and r["model_sha256"] for r in rows)


def test_stdout_is_utf8_json_lines_and_a_bad_file_gets_local_advice(tiny_artifact, photos, tmp_path):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (photos / "empty.jpg").write_bytes(b"")
    run = caption(
        "--artifact",
        str(tiny_artifact),
        "--cache",
        str(tmp_path / "cache"),
        str(photos / "trip" / "café.png"),
        str(photos / "broken.png"),
        str(photos / "empty.jpg"),
    )
    assert run.returncode == 1  # some inputs failed
    text = run.stdout.decode("utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    assert '"café.png"' in text and "\\u00e9" not in text
    assert [tuple(r) for r in rows] == [COLUMNS] * 3
    assert [r["key"] for r in rows if r["error"] is None] == ["café.png"]
    errors = [r["error"] for r in rows if r["error"]]
    assert len(errors) == 2 and not any("upload" in e for e in errors), errors


def test_a_glob_is_expanded_and_keys_are_relative_to_its_fixed_part(tiny_artifact, photos, tmp_path):
    out = tmp_path / "g.jsonl"
    run = caption(
        "--artifact",
        str(tiny_artifact),
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        str(photos / "**" / "*.png"),
    )
    assert run.returncode == 0, run.stderr.decode()
    assert sorted(json.loads(line)["key"] for line in out.read_text(encoding="utf-8").splitlines()) == [
        "a.png",
        "trip/café.png",
    ]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--out", "{tmp}/captions.txt", "{photos}"], "unknown output type '.txt'; name it .jsonl, .csv or .parquet"),
        (["--out", "{tmp}/old.jsonl", "{photos}"], "old.jsonl exists (an earlier run's output)"),
        (["{tmp}/no-such-folder"], "no such file or folder"),
        (["{tmp}/nothing-*.png"], "nothing matches"),
        (["{tmp}/empty-folder"], "no images in"),
    ],
)
def test_what_cannot_be_done_is_refused_in_one_line_before_the_model_loads(photos, tmp_path, args, expected):
    (tmp_path / "old.jsonl").write_text("an earlier run\n")
    (tmp_path / "empty-folder").mkdir()
    args = [a.format(tmp=tmp_path, photos=photos) for a in args]
    run = caption("--artifact", str(tmp_path / "never-read.pt2"), *args)
    stderr = run.stderr.decode()
    assert run.returncode == 2 and "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    assert stderr.startswith("caption: ") and expected in stderr
    assert (tmp_path / "old.jsonl").read_text() == "an earlier run\n"


def test_make_caption_puts_only_the_table_on_stdout(tiny_artifact, photos, tmp_path):
    # run as a person at a shell does: under `make test` the suite inherits MAKELEVEL, and a nested make prints
    # "Entering directory" on stdout before it reads the Makefile
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    run = subprocess.run(
        [
            "make",
            "-o",
            ".venv/.installed",
            "-o",
            "node_modules/.installed",
            "caption",
            f"ARTIFACT={tiny_artifact}",
            f"IMAGES={photos / 'a.png'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["key"] for line in run.stdout.splitlines()] == ["a.png"]
