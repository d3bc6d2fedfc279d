"""Session fixtures several folders share: tiny random checkpoints of each family, their .pt2 artifacts (built
once), a compiled AOTInductor cache; and the agent tests' plugin (the moto server, stacks, logs, a fake IMDS)."""
from __future__ import annotations

from pathlib import Path

import pytest

from checkpoints import tiny as tiny_models

pytest_plugins = ["agent_fixtures"]  # the agent tests' moto server, stacks, logs and fake IMDS


def _export(folder: Path, out: Path, *extra: str) -> Path:
    from export.cli import main

    code = main(["--model", str(folder), "--out", str(out), "--max-batch", "8", *extra])
    assert code == 0, f"export of {folder} failed with exit code {code}"
    return out


@pytest.fixture(scope="session")
def tiny_vit_gpt2_dir(tmp_path_factory) -> Path:
    return tiny_models.make_vit_gpt2(tmp_path_factory.mktemp("vit-gpt2"))


@pytest.fixture(scope="session")
def tiny_deit_gpt2_dir(tmp_path_factory) -> Path:
    return tiny_models.make_vit_gpt2(tmp_path_factory.mktemp("deit-gpt2"), encoder="deit")


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory) -> Path:
    return tiny_models.make_blip(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="session")
def tiny_trocr_dir(tmp_path_factory) -> Path:
    """trocr-base's layout: learned positions, embedding layer norm, GELU."""
    return tiny_models.make_trocr(tmp_path_factory.mktemp("trocr"))


@pytest.fixture(scope="session")
def tiny_trocr_small_dir(tmp_path_factory) -> Path:
    """trocr-small's layout (sinusoidal positions, scaled embeddings, ReLU) and a forced EOS at the length limit."""
    return tiny_models.make_trocr(tmp_path_factory.mktemp("trocr-small"), learned_positions=False, forced_eos=True)


@pytest.fixture(scope="session")
def tiny_trocr_artifact(tiny_trocr_dir, tmp_path_factory) -> Path:
    return _export(tiny_trocr_dir, tmp_path_factory.mktemp("artifacts") / "trocr.pt2")


@pytest.fixture(scope="session")
def tiny_trocr_small_artifact(tiny_trocr_small_dir, tmp_path_factory) -> Path:
    return _export(tiny_trocr_small_dir, tmp_path_factory.mktemp("artifacts") / "trocr-small.pt2")


@pytest.fixture(scope="session")
def tiny_florence2_dir(tmp_path_factory) -> Path:
    """Transformers' native Florence-2 at tiny sizes (DaViT + BART), forced BOS on as in published checkpoints."""
    return tiny_models.make_florence2(tmp_path_factory.mktemp("florence2"), forced_bos=True)


@pytest.fixture(scope="session")
def tiny_florence2_artifact(tiny_florence2_dir, tmp_path_factory) -> Path:
    return _export(tiny_florence2_dir, tmp_path_factory.mktemp("artifacts") / "florence2.pt2")


@pytest.fixture(scope="session")
def tiny_artifact(tiny_vit_gpt2_dir, tmp_path_factory) -> Path:
    """A real tiny ViT + GPT-2 .pt2 (float32, max batch 8), exported through the full CLI path."""
    return _export(tiny_vit_gpt2_dir, tmp_path_factory.mktemp("artifacts") / "vit-gpt2.pt2")


@pytest.fixture(scope="session")
def tiny_deit_artifact(tiny_deit_gpt2_dir, tmp_path_factory) -> Path:
    return _export(tiny_deit_gpt2_dir, tmp_path_factory.mktemp("artifacts") / "deit-gpt2.pt2")


@pytest.fixture(scope="session")
def tiny_aoti_cache(tiny_artifact, tmp_path_factory) -> Path:
    """A cache directory holding the tiny artifact compiled for this CPU (compiled once per session: ~1 min)."""
    import time

    import torch

    from runtime.backends import aoti
    from runtime.artifact.checksum import file_sha256

    cache = tmp_path_factory.mktemp("aoti-cache")
    started = time.monotonic()
    aoti.compiled_programs(tiny_artifact, file_sha256(tiny_artifact), torch.device("cpu"), cache,
                           report=lambda *_args, **_fields: None)
    print(f"AOTInductor compile of the tiny artifact: {time.monotonic() - started:.1f} s")
    return cache


@pytest.fixture(scope="session")
def tiny_blip_artifact(tiny_blip_dir, tmp_path_factory) -> Path:
    return _export(tiny_blip_dir, tmp_path_factory.mktemp("artifacts") / "blip.pt2", "--num-beams", "3")


@pytest.fixture(scope="session")
def tiny_qwen2_vl_dir(tmp_path_factory) -> Path:
    """The cheapest Qwen-VL variant to export: 2 vision and 2 text layers, 56x56 pixels -> 4 image tokens."""
    from checkpoints.qwen_vl_tiny import make_qwen_vl

    return make_qwen_vl(tmp_path_factory.mktemp("qwen2-vl"), "qwen2_vl")


@pytest.fixture(scope="session")
def tiny_qwen2_vl_artifact(tiny_qwen2_vl_dir, tmp_path_factory) -> Path:
    """Exported with a prompt of its own (not the default), so the manifest's prompt and hash are the export's."""
    from checkpoints.qwen_vl_tiny import IMAGE_SIZE

    return _export(tiny_qwen2_vl_dir, tmp_path_factory.mktemp("artifacts") / "qwen2-vl.pt2",
                   "--image-size", str(IMAGE_SIZE["qwen2_vl"]), "--prompt", "Caption the picture in a few words.")
