"""`backend: aoti` in the agent: packages stay local unless `aoti_shared_cache` trusts the bucket's compiled/."""

from __future__ import annotations

import hashlib
import shutil

import PIL.Image
import pytest
import torch

from runtime.agent.model.pointer import load_current
from runtime.backends import aoti


class CompileOnce:
    """Stands in for the ~1 min compile the aoti tests already proved: copies the prebuilt package, counts calls."""

    def __init__(self, prebuilt):
        self.prebuilt, self.calls = prebuilt, []

    def __call__(self, artifact, device, out):
        self.calls.append(str(artifact))
        return shutil.copy(self.prebuilt, out)


@pytest.fixture
def compile_once(tiny_aoti_cache, monkeypatch):
    (prebuilt,) = (tiny_aoti_cache / "compiled").rglob("*.pt2")
    fake = CompileOnce(prebuilt)
    monkeypatch.setattr(aoti, "compile_package", fake)
    return fake


def _start(stack, instance: str, **settings):
    return load_current(stack.config(backend="aoti", cache_dir=str(stack.tmp / instance), **settings), stack.s3, "cpu")


def _compiled_keys(stack) -> list[str]:
    listed = stack.s3.list_objects_v2(Bucket=stack.artifacts, Prefix="compiled/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_with_the_shared_cache_on_a_second_agent_start_reuses_the_uploaded_package(
    stack, agent_log, tiny_artifact, compile_once
):
    pointer = stack.use_real_model(tiny_artifact)
    first, _ = _start(stack, "instance-1", aoti_shared_cache=True)
    key = "compiled/" + aoti.cache_key(pointer["sha256"], torch.device("cpu"))
    assert first.backend == "aoti" and len(compile_once.calls) == 1
    assert _compiled_keys(stack) == [key, key + ".sha256"]
    size = stack.s3.head_object(Bucket=stack.artifacts, Key=key)["ContentLength"]
    assert size == compile_once.prebuilt.stat().st_size
    digest = stack.s3.get_object(Bucket=stack.artifacts, Key=key + ".sha256")["Body"].read().decode().split()[0]
    assert digest == hashlib.sha256(compile_once.prebuilt.read_bytes()).hexdigest()
    assert [e["key"] for e in agent_log.events("aoti_uploaded")] == [key.removeprefix("compiled/")]

    second, _ = _start(stack, "instance-2", aoti_shared_cache=True)
    assert second.backend == "aoti" and len(compile_once.calls) == 1, "the second instance must not compile again"
    assert agent_log.events("aoti_loaded")[-1]["source"] == "remote cache"
    pixels = first.preprocess([PIL.Image.new("RGB", (40, 30), (200, 40, 90))])
    assert first.generate_ids(pixels) == second.generate_ids(pixels)


def test_the_shared_cache_is_off_by_default_neither_read_nor_written(stack, agent_log, tiny_artifact, compile_once):
    pointer = stack.use_real_model(tiny_artifact)
    key = "compiled/" + aoti.cache_key(pointer["sha256"], torch.device("cpu"))
    body = compile_once.prebuilt.read_bytes()
    stack.s3.put_object(Bucket=stack.artifacts, Key=key, Body=body)
    stack.s3.put_object(Bucket=stack.artifacts, Key=key + ".sha256", Body=hashlib.sha256(body).hexdigest().encode())
    assert stack.config().aoti_shared_cache is False
    captioner, _ = _start(stack, "instance-1")
    assert captioner.backend == "aoti" and len(compile_once.calls) == 1, "compiled here, the bucket's not fetched"
    assert agent_log.events("aoti_loaded")[-1]["source"].startswith("compiled in")
    assert agent_log.events("aoti_uploaded") == [] and _compiled_keys(stack) == [key, key + ".sha256"]


@pytest.mark.parametrize("published", ["other bytes", "no digest"])
def test_with_the_shared_cache_on_a_package_whose_digest_mismatches_is_refused(
    stack, agent_log, tiny_artifact, compile_once, published
):
    pointer = stack.use_real_model(tiny_artifact)
    key = "compiled/" + aoti.cache_key(pointer["sha256"], torch.device("cpu"))
    stack.s3.put_object(Bucket=stack.artifacts, Key=key, Body=b"native code from someone else")
    digest = hashlib.sha256(compile_once.prebuilt.read_bytes()).hexdigest()  # a digest of other bytes
    stack.s3.put_object(
        Bucket=stack.artifacts,
        Key=key + ".sha256",
        Body=(digest if published == "other bytes" else "not a digest").encode(),
    )
    captioner, _ = _start(stack, "instance-1", aoti_shared_cache=True)
    (refused,) = agent_log.events("aoti_remote_refused")
    assert ("its published digest says" if published == "other bytes" else "is not a SHA-256") in refused["reason"]
    assert captioner.backend == "aoti" and len(compile_once.calls) == 1, "refused, so compiled here"
    assert agent_log.events("aoti_loaded")[-1]["source"].startswith("compiled in")
    uploaded = stack.s3.get_object(Bucket=stack.artifacts, Key=key)["Body"].read()
    assert uploaded == compile_once.prebuilt.read_bytes(), "the worker's own package replaces the refused one"


def test_aoti_shared_cache_reads_booleans_and_refuses_other_words(stack):
    from runtime.agent.config import ConfigError, load_config

    assert stack.config(aoti_shared_cache=True).aoti_shared_cache is True
    path = stack.write_config()
    assert load_config(path, environ={"CAPTIONKIT_AOTI_SHARED_CACHE": "true"}).aoti_shared_cache is True
    with pytest.raises(ConfigError, match="not a valid bool for aoti_shared_cache"):
        load_config(path, environ={"CAPTIONKIT_AOTI_SHARED_CACHE": "maybe"})


def test_backend_defaults_to_the_exported_programs(stack):
    assert stack.config().backend == "exported"
