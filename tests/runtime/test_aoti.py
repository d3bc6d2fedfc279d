"""The AOTInductor backend: same tokens as the exported programs, a cache keyed by artifact/torch/device, fallback."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from runtime.backends import aoti
from runtime.backends.aoti import trust
from runtime.backends.aoti.compile import example_sizes
from runtime.captioner import LoadOptions, load_captioner
from runtime.errors import ArtifactError


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
    compiled = load_captioner(
        tiny_artifact, "cpu", LoadOptions(backend="aoti"), cache_dir=tiny_aoti_cache, report=lines
    )
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
    compiled = load_captioner(artifact, "cpu", LoadOptions(backend="aoti"), cache_dir=tmp_path, report=Lines())
    assert compiled.backend == "aoti"
    pixels = _pixels(exported, count=3)
    for beams in (1, 3):
        assert compiled.generate_ids(pixels, num_beams=beams) == exported.generate_ids(pixels, num_beams=beams), beams


def test_compile_package_re_exports_the_described_programs_with_a_dynamic_batch_and_never_loads_through_torch(
    tiny_artifact, tmp_path, monkeypatch
):
    import torch.export.pt2_archive._package as package

    from runtime.artifact import pt2

    def refuse(*_args, **_kwargs):
        raise AssertionError("torch's archive loader was called on the artifact")

    for owner in (pt2, package):
        monkeypatch.setattr(owner, "load_pt2", refuse)
    monkeypatch.setattr(torch.export, "load", refuse)
    compiled = {}

    def aot_compile(module, args, kwargs=None, options=None):  # records what would be compiled, compiles nothing
        compiled[len(compiled)] = (module, args, options)
        return []

    monkeypatch.setattr(torch._inductor, "aot_compile", aot_compile)
    monkeypatch.setattr(pt2, "package_pt2", lambda out, aoti_files: open(out, "wb").close())
    out = aoti.compile_package(tiny_artifact, torch.device("cpu"), tmp_path / "package.pt2")
    assert out.exists() and len(compiled) == 2
    (encoder, (pixels,), options), (step, step_args, _) = compiled[0], compiled[1]
    assert options["aot_inductor.package"] is True and pixels.shape[0] == 2 and step_args[0].shape == (2,)
    manifest = load_captioner(tiny_artifact, "cpu").manifest
    for module, first in ((encoder, "pixels"), (step, "tokens")):
        (placeholder, *_) = [node for node in module.graph.nodes if node.op == "placeholder"]
        batch = placeholder.meta["val"].shape[0]
        assert isinstance(batch, torch.SymInt), f"{first}: the batch dimension must stay dynamic"
    assert step_args[2].shape[1:4:2] == (2, manifest["max_length"])


def test_a_failed_compile_falls_back_to_the_exported_programs_and_says_why(tiny_artifact, tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("C++ compiler not found (simulated)")

    monkeypatch.setattr(aoti, "compile_package", broken)
    lines = Lines()
    captioner = load_captioner(tiny_artifact, "cpu", LoadOptions(backend="aoti"), cache_dir=tmp_path, report=lines)
    assert captioner.backend == "exported"
    (fallback,) = lines.events("aoti_fallback")
    assert "C++ compiler not found (simulated)" in fallback["reason"] and "exported programs" in fallback["reason"]
    assert captioner.caption_pixels(_pixels(captioner, 2))


def test_a_package_that_fails_to_load_falls_back_to_the_exported_programs(tiny_artifact, tiny_aoti_cache, tmp_path):
    shutil.copytree(tiny_aoti_cache, tmp_path, dirs_exist_ok=True)
    (package,) = (tmp_path / "compiled").rglob("*.pt2")
    package.write_bytes(b"not a zip")
    trust.seal(package)  # the digest matches: the damage shows only when torch reads it
    lines = Lines()
    captioner = load_captioner(tiny_artifact, "cpu", LoadOptions(backend="aoti"), cache_dir=tmp_path, report=lines)
    assert captioner.backend == "exported" and lines.events("aoti_fallback")
    assert not package.exists(), "a damaged package is removed so the next start fetches or compiles afresh"
    assert not trust.sidecar(package).exists()


class Recompile:
    """Stands in for `compile_package` (the real one is proven above): copies the prebuilt package, counts calls;
    `loads` records the package each load read, and its bytes."""

    def __init__(self, prebuilt, monkeypatch):
        self.prebuilt, self.calls, self.loads = prebuilt, [], []
        real_load = aoti.load_package
        monkeypatch.setattr(aoti, "compile_package", self)
        monkeypatch.setattr(aoti, "load_package", lambda path, device: self._load(real_load, path, device))

    def __call__(self, artifact, device, out):
        self.calls.append(out)
        return shutil.copy(self.prebuilt, out)

    def _load(self, real_load, path, device):
        self.loads.append((path, path.read_bytes()))
        return real_load(path, device)


def _cached(tiny_aoti_cache, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_aoti_cache, cache)
    (package,) = (cache / "compiled").rglob("*.pt2")
    return (
        cache,
        package,
        Recompile((tiny_aoti_cache / "compiled" / package.relative_to(cache / "compiled")), monkeypatch),
    )


def _group_writable(package):
    package.chmod(0o664)


def _world_writable(package):
    package.chmod(0o646)


def _digest_mismatch(package):
    data = package.read_bytes()
    package.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))


def _no_sidecar(package):
    trust.sidecar(package).unlink()


def _symlink(package):
    target = package.with_name("elsewhere.pt2")
    package.rename(target)
    package.symlink_to(target)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_group_writable, "writable by its group or others (mode 0664"),
        (_world_writable, "writable by its group or others (mode 0646"),
        (_digest_mismatch, "the file is torn or damaged"),
        (_no_sidecar, ".sha256 cannot be checked"),
        (_symlink, "is a symbolic link"),
    ],
)
def test_a_cached_package_others_could_have_written_or_that_is_damaged_is_recompiled_not_loaded(
    tiny_artifact, tiny_aoti_cache, tmp_path, monkeypatch, damage, reason
):
    cache, package, recompile = _cached(tiny_aoti_cache, tmp_path, monkeypatch)
    damage(package)
    lines = Lines()
    captioner = load_captioner(tiny_artifact, "cpu", LoadOptions(backend="aoti"), cache_dir=cache, report=lines)
    (refused,) = lines.events("aoti_package_refused")
    assert reason in refused["reason"] and "compiling it again" in refused["reason"]
    assert captioner.backend == "aoti" and len(recompile.calls) == 1
    assert recompile.loads == [(package, recompile.prebuilt.read_bytes())], "only the recompiled package is loaded"
    assert not package.is_symlink() and package.stat().st_mode & 0o777 == 0o644
    assert trust.unusable(package) is None, "the recompiled package is sealed with a matching sidecar"
    assert captioner.caption_pixels(_pixels(captioner, 2))


def test_an_intact_cached_package_is_loaded_without_compiling(tiny_artifact, tiny_aoti_cache, tmp_path, monkeypatch):
    cache, package, recompile = _cached(tiny_aoti_cache, tmp_path, monkeypatch)
    lines = Lines()
    captioner = load_captioner(tiny_artifact, "cpu", LoadOptions(backend="aoti"), cache_dir=cache, report=lines)
    assert captioner.backend == "aoti" and recompile.calls == [] and [p for p, _ in recompile.loads] == [package]
    assert lines.events("aoti_package_refused") == [] and lines.events("aoti_cache_untrusted") == []


@pytest.mark.parametrize("folder", ["root", "compiled", "release"])
def test_a_writable_folder_above_the_package_sends_the_compile_to_a_private_folder(
    tiny_artifact, tiny_aoti_cache, tmp_path, monkeypatch, folder
):
    cache, package, recompile = _cached(tiny_aoti_cache, tmp_path, monkeypatch)
    loose = {"root": cache, "compiled": cache / "compiled", "release": package.parent}[folder]
    loose.chmod(0o777)
    before = package.read_bytes()
    lines = Lines()
    captioner = load_captioner(tiny_artifact, "cpu", LoadOptions(backend="aoti"), cache_dir=cache, report=lines)
    (untrusted,) = lines.events("aoti_cache_untrusted")
    assert f"{loose} is writable by its group or others" in untrusted["reason"]
    assert captioner.backend == "aoti" and len(recompile.calls) == 1
    ((loaded, _),) = recompile.loads
    assert cache not in loaded.parents and not loaded.exists(), "compiled and loaded elsewhere, then removed"
    assert package.read_bytes() == before, "nothing is written into the untrusted folder"


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_cached_package_owned_by_another_user_is_recompiled(tiny_artifact, tiny_aoti_cache, tmp_path, monkeypatch):
    cache, package, recompile = _cached(tiny_aoti_cache, tmp_path, monkeypatch)
    os.chown(package, 65534, 65534)
    lines = Lines()
    captioner = load_captioner(tiny_artifact, "cpu", LoadOptions(backend="aoti"), cache_dir=cache, report=lines)
    (refused,) = lines.events("aoti_package_refused")
    assert "is owned by uid 65534" in refused["reason"] and captioner.backend == "aoti"
    assert len(recompile.calls) == 1 and package.stat().st_uid == os.getuid()


def test_compiling_from_a_manifest_without_the_example_sizes_is_refused_with_the_reason():
    with pytest.raises(ArtifactError, match="lacks valid head_dim, heads, height, layers, width"):
        example_sizes({"max_batch": 4, "max_beams": 2, "max_length": 8, "dtype": "float32"})
    manifest = {
        "image_size": [4096, 4096],
        "max_batch": 4,
        "max_beams": 2,
        "max_length": 1 << 20,
        "cache": {"layers": 64, "heads": 64, "head_dim": 128},
        "dtype": "float32",
    }
    with pytest.raises(ArtifactError, match="too large"):
        example_sizes(manifest)
    with pytest.raises(ArtifactError, match="not a floating-point torch dtype"):
        example_sizes({**manifest, "max_length": 8, "dtype": "int64"})


def test_an_unknown_backend_is_refused(tiny_artifact):
    with pytest.raises(ValueError, match="backend must be one of"):
        load_captioner(tiny_artifact, "cpu", LoadOptions(backend="tensorrt"))
