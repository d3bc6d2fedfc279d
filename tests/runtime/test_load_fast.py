"""The load's shortcuts keep every check and every token: one integrity read, stamps, the int8 cache."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest
import torch

import artifact_tools
from export.cli import parity_images
from runtime.artifact import verify as artifact_module
from runtime.artifact.checksum import file_sha256, scan_sha256
from runtime.artifact.verify import verify_file
from runtime.captioner import LoadOptions, load_captioner
from runtime.errors import ArtifactError


@pytest.fixture
def scans(monkeypatch):
    """Every integrity read: how many regions (program records) it hashed besides the whole file."""
    seen = []

    def counting(path, regions, *args, **kwargs):
        seen.append(len(regions))
        return scan_sha256(path, regions, *args, **kwargs)

    monkeypatch.setattr(artifact_module, "scan_sha256", counting)
    return seen


def test_one_read_hashes_the_file_and_each_region_at_chunk_edges(tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    regions = {"a": (0, 65_536), "b": (65_530, 6), "c": (100_000, 150_000), "end": (299_990, 10), "empty": (5, 0)}
    whole, parts = scan_sha256(path, {k: v for k, v in regions.items() if k != "a"} | {"a": regions["a"]}, chunk=65_536)
    assert whole == hashlib.sha256(data).hexdigest()
    assert parts == {k: hashlib.sha256(data[o : o + n]).hexdigest() for k, (o, n) in regions.items()}


def test_pointer_matched_files_skip_the_records_and_an_agent_checked_one_is_not_read(tiny_artifact, scans):
    sha = file_sha256(tiny_artifact)
    verify_file(tiny_artifact, expected_sha256=sha)
    verify_file(tiny_artifact, expected_sha256=sha, sha256_checked=True)  # the agent hashed it already
    verify_file(tiny_artifact)  # no pointer: every program record is checked, in the same read
    assert scans[0] == 0 and len(scans) == 2 and scans[1] > 2


def test_a_verified_file_is_not_hashed_again_until_it_changes(tiny_artifact, tmp_path, scans):
    path = shutil.copyfile(tiny_artifact, tmp_path / "model.pt2")
    cache = tmp_path / "cache"
    first = load_captioner(path, "cpu", cache_dir=cache)
    assert verify_file(path, cache_dir=cache)[2] == first.sha256 == file_sha256(path)
    assert len(scans) == 1
    stat = path.stat()
    damaged = artifact_tools.flip_byte_in_record(path, tmp_path / "damaged.pt2", "data/weights/weight_2")
    with open(path, "r+b") as f:  # the same damage in place, same size, with the old modification time put back
        f.write(damaged.read_bytes())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ArtifactError, match="checksum mismatch in program 'encoder'"):
        verify_file(path, cache_dir=cache)


def test_a_stamped_file_cut_short_in_place_is_refused(tiny_artifact, tmp_path):
    path = shutil.copyfile(tiny_artifact, tmp_path / "model.pt2")
    cache = tmp_path / "cache"
    verify_file(path, cache_dir=cache)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size * 6 // 10)
    with pytest.raises(ArtifactError, match="not a complete PT2 archive"):
        verify_file(path, cache_dir=cache)


def test_a_pointer_mismatch_is_refused_even_with_a_stamp(tiny_artifact, tmp_path):
    path = shutil.copyfile(tiny_artifact, tmp_path / "model.pt2")
    verify_file(path, cache_dir=tmp_path)
    with pytest.raises(ArtifactError, match="model pointer says"):
        verify_file(path, expected_sha256="0" * 64, cache_dir=tmp_path)


def test_int8_weights_come_from_the_cache_with_the_same_tokens(tiny_artifact, tmp_path, monkeypatch):
    pixels = parity_images([], 4, seed=3)
    made = load_captioner(tiny_artifact, "cpu", LoadOptions(quantize="int8"), cache_dir=tmp_path)
    assert list((tmp_path / "int8").glob("*.pt"))

    def refuse(*args, **kwargs):
        raise AssertionError("quantized again although the cache holds the weights")

    monkeypatch.setattr(torch, "quantize_per_channel", refuse)
    cached = load_captioner(tiny_artifact, "cpu", LoadOptions(quantize="int8"), cache_dir=tmp_path)
    for beams in (1, 3):
        expected = made.generate_ids(made.preprocess(pixels), beams)
        assert cached.generate_ids(cached.preprocess(pixels), beams) == expected


@pytest.mark.parametrize("damage", ["nan scales", "wrong shape", "not a dict", "garbage bytes"])
def test_an_edited_int8_entry_is_made_again_never_used(damage, tiny_artifact, tmp_path):
    pixels = parity_images([], 3, seed=4)
    made = load_captioner(tiny_artifact, "cpu", LoadOptions(quantize="int8"), cache_dir=tmp_path)
    (entry,) = (tmp_path / "int8").glob("*.pt")
    good = entry.read_bytes()
    kept = torch.load(entry, weights_only=True)
    values, scales = kept["decoder_step"][0]
    if damage == "nan scales":
        kept["decoder_step"][0] = (values, torch.full_like(scales, float("nan")))
    elif damage == "wrong shape":
        kept["decoder_step"][0] = (values[:1], scales[:1])
    torch.save(kept if damage != "not a dict" else [kept], entry)
    if damage == "garbage bytes":
        entry.write_bytes(b"\x80\x04not a torch file")
    again = load_captioner(tiny_artifact, "cpu", LoadOptions(quantize="int8"), cache_dir=tmp_path)
    for beams in (1, 3):
        assert again.generate_ids(again.preprocess(pixels), beams) == made.generate_ids(made.preprocess(pixels), beams)
    assert entry.read_bytes() == good  # made again from the artifact and written back whole


class _Bucket:
    """An S3 client's download_file over one object (a small unit test; the flow tests use moto)."""

    def __init__(self, data: bytes):
        self.data, self.downloads = data, 0

    def download_file(self, bucket, key, dest):
        self.downloads += 1
        with open(dest, "wb") as f:
            f.write(self.data)


def test_the_agent_cache_hashes_an_unchanged_artifact_once_and_replaces_a_damaged_one(tmp_path, monkeypatch):
    from runtime.agent.model import pointer as pointer_module

    data = os.urandom(100_000)
    s3, hashed = _Bucket(data), []
    real = pointer_module.file_sha256
    monkeypatch.setattr(pointer_module, "file_sha256", lambda path: hashed.append(path) or real(path))
    ref = {"sha256": hashlib.sha256(data).hexdigest(), "key": "models/x.pt2"}
    path = pointer_module.fetch_artifact(s3, "b", ref, tmp_path)
    pointer_module.fetch_artifact(s3, "b", ref, tmp_path)  # a restart: stamped, not hashed again
    assert (s3.downloads, len(hashed)) == (1, 1)
    with open(path, "r+b") as f:
        f.write(b"\0" * 10)
    assert pointer_module.fetch_artifact(s3, "b", ref, tmp_path).read_bytes() == data
    assert s3.downloads == 2
