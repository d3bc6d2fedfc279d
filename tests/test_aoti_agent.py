"""`backend: aoti` in the agent: the first start compiles and uploads the package, later starts reuse it."""
from __future__ import annotations

import shutil

import torch

from runtime import aoti
from runtime.agent.pointer import load_current


def test_a_second_agent_start_reuses_the_uploaded_package_without_compiling(stack, agent_log, tiny_artifact,
                                                                            tiny_aoti_cache, monkeypatch):
    pointer = stack.use_real_model(tiny_artifact)
    (prebuilt,) = (tiny_aoti_cache / "compiled").rglob("*.pt2")
    compiles = []

    def compile_once(artifact, device, out):  # stands in for the ~1 min compile the aoti tests already proved
        compiles.append(str(artifact))
        return shutil.copy(prebuilt, out)

    monkeypatch.setattr(aoti, "compile_package", compile_once)
    first, _ = load_current(stack.config(backend="aoti", cache_dir=str(stack.tmp / "instance-1")), stack.s3, "cpu")
    key = "compiled/" + aoti.cache_key(pointer["sha256"], torch.device("cpu"))
    assert first.backend == "aoti" and len(compiles) == 1
    assert stack.s3.head_object(Bucket=stack.artifacts, Key=key)["ContentLength"] == prebuilt.stat().st_size
    assert [e["key"] for e in agent_log.events("aoti_uploaded")] == [key.removeprefix("compiled/")]

    second, _ = load_current(stack.config(backend="aoti", cache_dir=str(stack.tmp / "instance-2")), stack.s3, "cpu")
    assert second.backend == "aoti" and len(compiles) == 1, "the second instance must not compile again"
    assert agent_log.events("aoti_loaded")[-1]["source"] == "remote cache"
    pixels = first.preprocess([__import__("PIL.Image").Image.new("RGB", (40, 30), (200, 40, 90))])
    assert first.generate_ids(pixels) == second.generate_ids(pixels)


def test_backend_defaults_to_the_exported_programs(stack):
    assert stack.config().backend == "exported"
