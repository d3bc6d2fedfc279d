"""The model registry a laptop drives: content-addressed upload, pointer history, list, rollback."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

import artifact_tools
from runtime import registry
from runtime.errors import ArtifactError
from tools import models

POINTER = registry.POINTER_KEY


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="artifacts")
        yield client


def test_upload_is_content_addressed_and_moves_the_pointer(s3, tiny_artifact):
    pointer = models.upload(s3, "artifacts", POINTER, tiny_artifact, progress=False)
    assert pointer["key"] == f"models/{pointer['sha256']}.pt2" and pointer["history"] == []
    stored = json.loads(s3.get_object(Bucket="artifacts", Key=POINTER)["Body"].read())
    assert stored["sha256"] == pointer["sha256"] and stored["family"] == "vit-gpt2"
    assert s3.head_object(Bucket="artifacts", Key=pointer["key"])["ContentLength"] == tiny_artifact.stat().st_size


def test_list_marks_current_and_rollback_walks_back(s3, tiny_artifact, tmp_path):
    other = artifact_tools.rewrite_manifest(tiny_artifact, tmp_path / "other.pt2", note="second upload")
    first = models.upload(s3, "artifacts", POINTER, tiny_artifact, progress=False)
    second = models.upload(s3, "artifacts", POINTER, other, progress=False)
    assert second["history"][0]["sha256"] == first["sha256"]
    listed = {row["key"]: row["current"] for row in registry.list_models(s3, "artifacts", POINTER)}
    assert listed == {first["key"]: False, second["key"]: True}
    back = registry.rollback(s3, "artifacts", POINTER)
    assert back["sha256"] == first["sha256"] and back["rolled_back_from"] == second["key"]
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        registry.rollback(s3, "artifacts", POINTER)


def test_a_damaged_artifact_is_never_published(s3, tiny_artifact, tmp_path):
    bad = artifact_tools.truncate(tiny_artifact, tmp_path / "cut.pt2")
    with pytest.raises(ArtifactError):
        models.upload(s3, "artifacts", POINTER, bad, progress=False)
    assert "Contents" not in s3.list_objects_v2(Bucket="artifacts")


def test_the_agent_reads_the_pointer_where_the_registry_writes_it():
    from runtime.agent.config import AgentConfig
    from stacks.storage import MODELS_PREFIX

    assert AgentConfig().model_pointer == registry.POINTER_KEY  # config.py keeps its own default literal
    assert registry.artifact_key("ab" * 32) == f"{MODELS_PREFIX}{'ab' * 32}.pt2"


def test_a_pointer_in_the_old_schema_becomes_history_without_its_previous_field(s3, tmp_path):
    old = {
        "key": f"models/{'0' * 64}.pt2",
        "sha256": "0" * 64,
        "previous": None,
        "uploaded_at": "2026-01-01T00:00:00+00:00",
    }
    s3.put_object(Bucket="artifacts", Key=POINTER, Body=json.dumps(old).encode())
    fake = tmp_path / "fake.pt2"
    fake.write_bytes(b"not checked: verify=False")
    pointer = registry.publish(s3, "artifacts", fake, verify=False, model="fake")
    assert pointer["history"] == [{k: v for k, v in old.items() if k != "previous"}] and "previous" not in pointer
    assert registry.read_pointer(s3, "artifacts")["sha256"] == pointer["sha256"]
