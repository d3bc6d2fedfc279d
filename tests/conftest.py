"""Session fixtures several folders share: tiny random checkpoints of each family, their .pt2 artifacts (built
once), a compiled AOTInductor cache; and the agent tests' plugin (the moto server, stacks, logs, a fake IMDS)."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from checkpoints import florence2_tiny
from checkpoints import tiny as tiny_models

pytest_plugins = ["agent_fixtures"]  # the agent tests' moto server, stacks, logs and fake IMDS
# The files that each take a minute or more. Under pytest-xdist (`make test`: one file per worker at a time) they
# start first, longest first, so that no worker is left alone with one of them at the end.
LONG_FILES = (
    "test_e2e_local.py",
    "test_gpu_script.py",
    "test_aoti.py",
    "test_export.py",
    "test_qwen_vl.py",
    "test_boot_rehearsal.py",
    "test_aoti_agent.py",
)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker sorts alike; a plain run keeps the collection order
        rank = {name: index for index, name in enumerate(LONG_FILES)}
        items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))


def built_once(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """`build(folder)` in a fresh folder, once per run: under pytest-xdist the first worker to ask builds it under a
    lock in the run's shared temporary root and the others reuse it, as one process reuses a session fixture."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent / "built-once"  # this run's root, above every worker's basetemp
    root.mkdir(mode=0o700, exist_ok=True)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this worker dies
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(mode=0o700)
            done.write_text(str(build(folder).relative_to(folder)))
    return folder / done.read_text()


def _export(tmp_path_factory, folder: Path, name: str, *extra: str) -> Path:
    """`folder` exported through the CLI to `<name>.pt2` (max batch 8), once per run."""
    from export.cli import main

    def export(into: Path) -> Path:
        out = into / f"{name}.pt2"
        code = main(["--model", str(folder), "--out", str(out), "--max-batch", "8", *extra])
        assert code == 0, f"export of {folder} failed with exit code {code}"
        return out

    return built_once(tmp_path_factory, f"{name}-pt2", export)


@pytest.fixture(scope="session")
def tiny_vit_gpt2_dir(tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "vit-gpt2", tiny_models.make_vit_gpt2)


@pytest.fixture(scope="session")
def tiny_deit_gpt2_dir(tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "deit-gpt2", lambda folder: tiny_models.make_vit_gpt2(folder, encoder="deit"))


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "blip", tiny_models.make_blip)


@pytest.fixture(scope="session")
def tiny_trocr_dir(tmp_path_factory) -> Path:
    """trocr-base's layout: learned positions, embedding layer norm, GELU."""
    return built_once(tmp_path_factory, "trocr", tiny_models.make_trocr)


@pytest.fixture(scope="session")
def tiny_trocr_small_dir(tmp_path_factory) -> Path:
    """trocr-small's layout (sinusoidal positions, scaled embeddings, ReLU) and a forced EOS at the length limit."""
    return built_once(
        tmp_path_factory,
        "trocr-small",
        lambda folder: tiny_models.make_trocr(folder, learned_positions=False, forced_eos=True),
    )


@pytest.fixture(scope="session")
def tiny_trocr_artifact(tiny_trocr_dir, tmp_path_factory) -> Path:
    return _export(tmp_path_factory, tiny_trocr_dir, "trocr")


@pytest.fixture(scope="session")
def tiny_trocr_small_artifact(tiny_trocr_small_dir, tmp_path_factory) -> Path:
    return _export(tmp_path_factory, tiny_trocr_small_dir, "trocr-small")


@pytest.fixture(scope="session")
def tiny_florence2_dir(tmp_path_factory) -> Path:
    """Transformers' native Florence-2 at tiny sizes (DaViT + BART), forced BOS on as in published checkpoints."""
    return built_once(
        tmp_path_factory, "florence2", lambda folder: florence2_tiny.make_florence2(folder, forced_bos=True)
    )


@pytest.fixture(scope="session")
def tiny_florence2_artifact(tiny_florence2_dir, tmp_path_factory) -> Path:
    return _export(tmp_path_factory, tiny_florence2_dir, "florence2")


@pytest.fixture(scope="session")
def tiny_artifact(tiny_vit_gpt2_dir, tmp_path_factory) -> Path:
    """A real tiny ViT + GPT-2 .pt2 (float32, max batch 8), exported through the full CLI path."""
    return _export(tmp_path_factory, tiny_vit_gpt2_dir, "vit-gpt2")


@pytest.fixture(scope="session")
def tiny_bf16_artifact(tiny_vit_gpt2_dir, tmp_path_factory) -> Path:
    """The same tiny ViT + GPT-2 exported in bfloat16 (max batch 8)."""
    return _export(tmp_path_factory, tiny_vit_gpt2_dir, "vit-gpt2-bf16", "--dtype", "bfloat16")


@pytest.fixture(scope="session")
def tiny_deit_artifact(tiny_deit_gpt2_dir, tmp_path_factory) -> Path:
    return _export(tmp_path_factory, tiny_deit_gpt2_dir, "deit-gpt2")


@pytest.fixture(scope="session")
def tiny_aoti_cache(tiny_artifact, tmp_path_factory) -> Path:
    """A cache directory holding the tiny artifact compiled for this CPU (compiled once per session: ~1 min)."""
    import time

    import torch

    from runtime.artifact.checksum import file_sha256
    from runtime.backends import aoti

    def compile_into(cache: Path) -> Path:
        started = time.monotonic()
        aoti.compiled_programs(
            tiny_artifact, file_sha256(tiny_artifact), torch.device("cpu"), cache, report=lambda *_args, **_fields: None
        )
        print(f"AOTInductor compile of the tiny artifact: {time.monotonic() - started:.1f} s")
        return cache

    return built_once(tmp_path_factory, "aoti-cache", compile_into)


@pytest.fixture(scope="session")
def tiny_blip_artifact(tiny_blip_dir, tmp_path_factory) -> Path:
    return _export(tmp_path_factory, tiny_blip_dir, "blip", "--num-beams", "3")


@pytest.fixture(scope="session")
def tiny_qwen2_vl_dir(tmp_path_factory) -> Path:
    """The cheapest Qwen-VL variant to export: 2 vision and 2 text layers, 56x56 pixels -> 4 image tokens."""
    from checkpoints.qwen_vl_tiny import make_qwen_vl

    return built_once(tmp_path_factory, "qwen2-vl", lambda folder: make_qwen_vl(folder, "qwen2_vl"))


@pytest.fixture(scope="session")
def tiny_qwen2_vl_artifact(tiny_qwen2_vl_dir, tmp_path_factory) -> Path:
    """Exported with a prompt of its own (not the default), so the manifest's prompt and hash are the export's."""
    from checkpoints.qwen_vl_tiny import IMAGE_SIZE

    return _export(
        tmp_path_factory,
        tiny_qwen2_vl_dir,
        "qwen2-vl",
        "--image-size",
        str(IMAGE_SIZE["qwen2_vl"]),
        "--prompt",
        "Caption the picture in a few words.",
    )
