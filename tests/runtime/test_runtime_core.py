"""The runtime: loads with torch alone, drops finished rows, and refuses damaged or foreign artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import artifact_tools
from export.cli import parity_images
from runtime.captioner import load_captioner
from runtime.errors import ArtifactError

ROOT = Path(__file__).resolve().parents[2]


def test_runtime_captions_without_importing_transformers(tiny_artifact, tmp_path):
    image = tmp_path / "x.png"
    parity_images([], 1)[0].save(image)
    code = (
        "import json, sys\n"
        "from runtime.captioner import load_captioner\n"
        "from runtime.images import load_image\n"
        f"c = load_captioner({str(tiny_artifact)!r}, 'cpu')\n"
        f"caption = c.caption([load_image({str(image)!r})])[0]\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'export', 'tools', 'demo'))\n"
        "print(json.dumps({'caption': caption, 'imported': bad}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["imported"] == [] and isinstance(result["caption"], str)


def test_caption_cli_prints_one_json_line_per_image(tiny_artifact, tmp_path):
    paths = []
    for i, image in enumerate(parity_images([], 2)):
        paths.append(tmp_path / f"{i}.jpg")
        image.save(paths[-1])
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "caption",
            "--artifact",
            str(tiny_artifact),
            *map(str, paths),
            str(tmp_path / "bad.jpg"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 1  # one bad input
    assert [line["uri"] for line in lines if line["error"] is None] == [str(p) for p in paths]
    assert "not a readable image" in [line for line in lines if line["error"]][0]["error"]


@pytest.mark.parametrize("beams", [1, 3])
def test_finished_rows_leave_the_batch(tiny_artifact, beams):
    captioner = load_captioner(tiny_artifact, device="cpu")
    pixels = captioner.preprocess(parity_images([], 8, seed=5))
    expected = captioner.generate_ids(pixels, num_beams=beams)
    lengths = {len(ids) for ids in expected}
    assert len(lengths) > 1, f"fixture should give captions of several lengths, got {lengths}"
    rows_seen = []
    honest = captioner.step

    def counting(input_ids, *rest):
        rows_seen.append(input_ids.shape[0])
        return honest(input_ids, *rest)

    captioner.step = counting
    assert captioner.generate_ids(pixels, num_beams=beams) == expected
    assert rows_seen[0] == 8 * beams and rows_seen[-1] < rows_seen[0]
    assert rows_seen == sorted(rows_seen, reverse=True)
    assert len(rows_seen) == max(len(ids) for ids in expected) - (beams > 1 and 0)


def test_truncated_file_is_refused(tiny_artifact, tmp_path):
    with pytest.raises(ArtifactError, match="not a complete PT2 archive"):
        load_captioner(artifact_tools.truncate(tiny_artifact, tmp_path / "cut.pt2"))


def test_tampered_weights_are_refused_naming_the_program(tiny_artifact, tmp_path):
    bad = artifact_tools.flip_byte_in_record(tiny_artifact, tmp_path / "bad.pt2", "data/weights/weight_2")
    with pytest.raises(ArtifactError, match="checksum mismatch in program 'encoder'"):
        load_captioner(bad)


def test_unknown_schema_is_refused(tiny_artifact, tmp_path):
    bad = artifact_tools.rewrite_manifest(tiny_artifact, tmp_path / "schema.pt2", schema_version=99)
    with pytest.raises(ArtifactError, match="schema version 99 is not supported"):
        load_captioner(bad)


def test_manifest_missing_a_field_is_refused_naming_it(tiny_artifact, tmp_path):
    bad = artifact_tools.rewrite_manifest(tiny_artifact, tmp_path / "old.pt2", max_beams=None)
    with pytest.raises(ArtifactError, match="manifest.json lacks max_beams"):
        load_captioner(bad)


def test_other_torch_version_is_refused(tiny_artifact, tmp_path):
    bad = artifact_tools.rewrite_manifest(tiny_artifact, tmp_path / "torch.pt2", torch_version="2.12.0")
    with pytest.raises(ArtifactError, match=r"exported with torch 2\.12\.0.*install torch==2\.12\.0"):
        load_captioner(bad)


def test_rewritten_but_intact_archive_still_loads(tiny_artifact, tmp_path):
    same = artifact_tools.rewrite_manifest(tiny_artifact, tmp_path / "same.pt2")
    images = parity_images([], 1)
    assert load_captioner(same).caption(images) == load_captioner(tiny_artifact).caption(images)


def test_pointer_checksum_mismatch_is_refused(tiny_artifact):
    with pytest.raises(ArtifactError, match="model pointer says"):
        load_captioner(tiny_artifact, expected_sha256="0" * 64)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_artifact):
    with pytest.raises(ArtifactError, match="torch cannot see a CUDA GPU"):
        load_captioner(tiny_artifact, device="cuda")
