"""The AOTInductor backend: same tokens as the exported programs, a cache keyed by artifact/torch/device, fallback."""
from __future__ import annotations

import shutil

import pytest
import torch

from runtime import aoti
from runtime.captioner import load_captioner


class Lines:
    """A `report` callable that keeps what it was told."""

    def __init__(self):
        self.lines: list[tuple[str, dict]] = []

    def __call__(self, level: str, **fields):
        self.lines.append((level, fields))

    def events(self, name: str) -> list[dict]:
        return [fields for _, fields in self.lines if fields.get("event") == name]


def _pixels(captioner, count=5, seed=0):
    from export.cli import parity_images

    return captioner.preprocess(parity_images([], count, seed))


def test_cache_key_names_artifact_torch_version_and_device():
    key = aoti.cache_key("ab" * 32, torch.device("cpu"))
    sha, version, device = key.split("/")
    assert sha == "ab" * 32 and version == torch.__version__.split("+")[0]
    assert device.startswith("cpu-") and device.endswith(".pt2")


def test_aoti_programs_give_the_exported_tokens_greedy_and_beam(tiny_artifact, tiny_aoti_cache):
    exported = load_captioner(tiny_artifact, "cpu")
    lines = Lines()
    compiled = load_captioner(tiny_artifact, "cpu", backend="aoti", compiled_cache_dir=tiny_aoti_cache, report=lines)
    assert compiled.backend == "aoti" and exported.backend == "exported"
    assert lines.events("aoti_loaded")[0]["source"] == "local cache"
    pixels = _pixels(exported)
    for beams in (1, 3):
        for rows in (pixels[:1], pixels):
            ours = compiled.generate_ids(rows, num_beams=beams)
            assert ours == exported.generate_ids(rows, num_beams=beams), f"beams={beams}, batch={len(rows)}"
    assert len({tuple(ids) for ids in compiled.generate_ids(pixels)}) > 1, "captions should differ per image"


@pytest.mark.parametrize("which", ["tiny_trocr_artifact", "tiny_florence2_artifact"])
def test_aoti_gives_the_exported_tokens_for_the_newer_families(request, which, tmp_path):
    artifact = request.getfixturevalue(which)
    exported = load_captioner(artifact, "cpu")
    compiled = load_captioner(artifact, "cpu", backend="aoti", compiled_cache_dir=tmp_path, report=Lines())
    assert compiled.backend == "aoti"
    pixels = _pixels(exported, count=3)
    for beams in (1, 3):
        assert compiled.generate_ids(pixels, num_beams=beams) == exported.generate_ids(pixels, num_beams=beams), beams


def test_a_failed_compile_falls_back_to_the_exported_programs_and_says_why(tiny_artifact, tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("C++ compiler not found (simulated)")

    monkeypatch.setattr(aoti, "compile_package", broken)
    lines = Lines()
    captioner = load_captioner(tiny_artifact, "cpu", backend="aoti", compiled_cache_dir=tmp_path, report=lines)
    assert captioner.backend == "exported"
    (fallback,) = lines.events("aoti_fallback")
    assert "C++ compiler not found (simulated)" in fallback["reason"] and "exported programs" in fallback["reason"]
    assert captioner.caption_pixels(_pixels(captioner, 2))


def test_a_damaged_cached_package_falls_back_to_the_exported_programs(tiny_artifact, tiny_aoti_cache, tmp_path):
    shutil.copytree(tiny_aoti_cache, tmp_path, dirs_exist_ok=True)
    (package,) = (tmp_path / "compiled").rglob("*.pt2")
    package.write_bytes(b"not a zip")
    lines = Lines()
    captioner = load_captioner(tiny_artifact, "cpu", backend="aoti", compiled_cache_dir=tmp_path, report=lines)
    assert captioner.backend == "exported" and lines.events("aoti_fallback")
    assert not package.exists(), "a damaged package is removed so the next start fetches or compiles afresh"


def test_an_unknown_backend_is_refused(tiny_artifact):
    with pytest.raises(ValueError, match="backend must be one of"):
        load_captioner(tiny_artifact, "cpu", backend="tensorrt")
