"""The whole flow on the local AWS: the real cdk deploy to moto, the real upload, the real agent on real S3 events."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools import flow, local, models
from tools.local_aws import aws_client, free_port
from tools.paths import LOCAL_STATE, REPO
from tools.run_agent import laptop_agent_config
from tools.target import Target

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    return flow.ensure_demo_model(tmp_path_factory.mktemp("demo") / "demo-model")


@pytest.fixture(scope="module")
def artifacts(demo_model, tmp_path_factory) -> tuple[Path, Path]:
    """Two uploads of the demo model with different manifests (so different checksums): greedy and 2 beams."""
    out = tmp_path_factory.mktemp("dist")
    first = flow.ensure_artifact(demo_model, out / "demo.pt2", "--max-batch", "16")
    second = flow.ensure_artifact(demo_model, out / "demo-beams.pt2", "--max-batch", "16", "--num-beams", "2")
    return first, second


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Moto on a free localhost port with this app deployed by the cdk CLI; stopped afterwards."""
    state = tmp_path_factory.mktemp("local-aws")
    outputs = local.up(port=free_port(), state_dir=state)
    saved = json.loads((state / LOCAL_STATE.name).read_text())
    target = Target(saved["stack_name"], saved["region"], saved["endpoint_url"])
    try:
        yield target, outputs
    finally:
        local.down(state_dir=state)


def _clients(target: Target):
    return aws_client("s3", target.region, target.endpoint_url), aws_client("sqs", target.region, target.endpoint_url)


def _config(target: Target, tmp: Path, **extra) -> dict:
    config = laptop_agent_config(target, "cpu")
    config.update(cache_dir=str(tmp / "cache"), **extra)
    return config


def _result_keys(s3, outputs) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=outputs["ResultsBucket"], Prefix=outputs["ResultsPrefix"]
    )
    return [o["Key"] for page in pages for o in page.get("Contents", []) if "/_jobs/" not in o["Key"]]


def test_dropped_images_are_captioned_and_bad_files_recorded(stack, artifacts, tmp_path):
    target, outputs = stack
    s3, sqs = _clients(target)
    pointer_key = outputs["ModelPointerKey"]
    models.upload(s3, outputs["ArtifactsBucket"], pointer_key, artifacts[0], progress=False)
    bucket, prefix = outputs["ImagesBucket"], outputs["ImagesPrefix"]
    truth = flow.drop_images(s3, bucket, prefix, 40, seed=7001)
    bad = flow.drop_bad_files(s3, bucket, prefix)

    run = flow.run_agent(target, _config(target, tmp_path), tmp_path, "--burst")
    assert run.code == 0, run.log[-5:]

    results = flow.read_results(s3, outputs["ResultsBucket"], outputs["ResultsPrefix"], [*truth, *bad])
    right = sum((results[k] or {}).get("caption") == caption for k, caption in truth.items())
    assert right / len(truth) >= 0.95, {k: results[k] for k in truth}
    for key, fragment in bad.items():
        assert results[key]["status"] == "error" and fragment in results[key]["error"], (key, results[key])
    expected = {f"{outputs['ResultsPrefix']}{k}.json" for k in [*truth, *bad]}
    assert sorted(_result_keys(s3, outputs)) == sorted(expected)  # exactly one record per input, nothing else
    assert flow.queue_depth(sqs, outputs["QueueUrl"]) == 0
    assert flow.queue_depth(sqs, outputs["DeadLetterQueueUrl"]) == 0


def test_an_int8_agent_keeps_the_demo_captioners_accuracy(stack, artifacts, tmp_path):
    target, outputs = stack
    s3, sqs = _clients(target)
    pointer = models.upload(s3, outputs["ArtifactsBucket"], outputs["ModelPointerKey"], artifacts[0], progress=False)
    truth = flow.drop_images(s3, outputs["ImagesBucket"], f"{outputs['ImagesPrefix']}int8/", 24, seed=7300)

    run = flow.run_agent(target, _config(target, tmp_path, quantize="int8"), tmp_path, "--burst")
    assert run.code == 0, run.log[-5:]
    assert [line["quantize"] for line in run.log if line.get("event") == "started"] == ["int8"]
    results = flow.read_results(s3, outputs["ResultsBucket"], outputs["ResultsPrefix"], truth)
    assert {r["model"]["sha256"] for r in results.values()} == {pointer["sha256"]}
    right = sum(results[k]["caption"] == c for k, c in truth.items())
    assert right / len(truth) >= 0.95, {k: results[k]["caption"] for k in truth}
    assert flow.queue_depth(sqs, outputs["QueueUrl"]) == 0


def test_a_florence2_artifact_serves_the_queue_like_any_other(stack, tiny_florence2_artifact, tmp_path):
    """The agent is family-blind: a Florence-2 .pt2 (prompt fixed inside) captions dropped images end to end."""
    from runtime.captioner import load_captioner

    target, outputs = stack
    s3, sqs = _clients(target)
    pointer = models.upload(
        s3, outputs["ArtifactsBucket"], outputs["ModelPointerKey"], tiny_florence2_artifact, progress=False
    )
    truth = flow.drop_images(s3, outputs["ImagesBucket"], f"{outputs['ImagesPrefix']}florence/", 6, seed=7400)

    run = flow.run_agent(target, _config(target, tmp_path), tmp_path, "--burst")
    assert run.code == 0, run.log[-5:]
    results = flow.read_results(s3, outputs["ResultsBucket"], outputs["ResultsPrefix"], truth)
    assert all(r["status"] == "ok" and r["model"]["sha256"] == pointer["sha256"] for r in results.values())
    captioner = load_captioner(tiny_florence2_artifact, device="cpu")
    assert [results[k]["caption"] for k in truth] == captioner.caption(_dropped(s3, outputs, truth))
    assert flow.queue_depth(sqs, outputs["QueueUrl"]) == 0


def test_a_qwen_vl_artifact_serves_the_queue_with_its_prompt_hash(stack, tiny_qwen2_vl_artifact, tmp_path):
    """A decoder-only Qwen2-VL .pt2 (prompt and KV prefix inside) needs nothing family-specific from the agent; its
    records carry the prompt's hash next to the model's, so captions of two prompts never read as one model's."""
    import hashlib

    from runtime.captioner import load_captioner

    target, outputs = stack
    s3, sqs = _clients(target)
    pointer = models.upload(
        s3, outputs["ArtifactsBucket"], outputs["ModelPointerKey"], tiny_qwen2_vl_artifact, progress=False
    )
    truth = flow.drop_images(s3, outputs["ImagesBucket"], f"{outputs['ImagesPrefix']}qwen/", 6, seed=7500)

    run = flow.run_agent(target, _config(target, tmp_path), tmp_path, "--burst")
    assert run.code == 0, run.log[-5:]
    results = flow.read_results(s3, outputs["ResultsBucket"], outputs["ResultsPrefix"], truth)
    captioner = load_captioner(tiny_qwen2_vl_artifact, device="cpu")
    prompt = captioner.manifest["prompt"]
    assert prompt == "Caption the picture in a few words."  # the export's --prompt, not the family's default
    model = {
        "name": captioner.name,
        "sha256": pointer["sha256"],
        "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
    }
    assert all(r["status"] == "ok" and r["model"] == model for r in results.values()), results
    captions = [results[k]["caption"] for k in truth]
    assert captions == captioner.caption(_dropped(s3, outputs, truth))  # what the runtime alone says
    assert len(set(captions)) > 1, captions  # image-dependent, so the comparison above means something
    assert flow.queue_depth(sqs, outputs["QueueUrl"]) == 0
    assert flow.queue_depth(sqs, outputs["DeadLetterQueueUrl"]) == 0


def _dropped(s3, outputs, keys) -> list:
    """The dropped images as the agent read them (JPEG decoded from the bucket's bytes, not the generator's)."""
    import io

    import PIL.Image

    return [
        PIL.Image.open(io.BytesIO(s3.get_object(Bucket=outputs["ImagesBucket"], Key=k)["Body"].read())) for k in keys
    ]


def test_second_upload_swaps_the_model_while_images_flow(stack, artifacts, tmp_path):
    target, outputs = stack
    s3, sqs = _clients(target)
    arts, pointer_key = outputs["ArtifactsBucket"], outputs["ModelPointerKey"]
    first = models.upload(s3, arts, pointer_key, artifacts[0], progress=False)
    path, log_path = tmp_path / "agent.json", tmp_path / "agent.log"
    path.write_text(json.dumps(_config(target, tmp_path, pointer_poll_s=1, batch_size=4)))
    with open(log_path, "w") as log_file:
        agent = subprocess.Popen(
            [sys.executable, "-m", "runtime", "agent", "--config", str(path)],
            cwd=REPO,
            env=target.env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    bucket, prefix = outputs["ImagesBucket"], f"{outputs['ImagesPrefix']}swap/"
    truth: dict[str, str] = {}
    try:
        truth |= flow.drop_images(s3, bucket, prefix, 16, seed=7100)
        _wait(lambda: _count(s3, outputs, truth) >= 4, agent, log_path)
        second = models.upload(s3, arts, pointer_key, artifacts[1], progress=False)
        seed = 7101
        while not _models_used(s3, outputs, truth) >= {second["sha256"]}:  # images keep flowing during the swap
            assert seed < 7160, "the new model never swapped in"
            truth |= flow.drop_images(s3, bucket, prefix, 2, seed=seed)
            seed += 1
            _wait(lambda: _count(s3, outputs, truth) == len(truth), agent, log_path, timeout_s=300)
        last = flow.drop_images(s3, bucket, prefix, 8, seed=7999)
        truth |= last
        _wait(lambda: _count(s3, outputs, truth) == len(truth), agent, log_path, timeout_s=120)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=120)
    log = log_path.read_text()
    assert agent.returncode == 0, log[-2000:]
    results = flow.read_results(s3, outputs["ResultsBucket"], outputs["ResultsPrefix"], truth)
    assert {r["model"]["sha256"] for r in results.values()} == {first["sha256"], second["sha256"]}
    assert {results[k]["model"]["sha256"] for k in last} == {second["sha256"]}
    right = sum(results[k]["caption"] == c for k, c in truth.items())
    assert right / len(truth) >= 0.95
    assert flow.queue_depth(sqs, outputs["QueueUrl"]) == 0
    assert flow.queue_depth(sqs, outputs["DeadLetterQueueUrl"]) == 0


def _models_used(s3, outputs, truth) -> set[str]:
    results = flow.read_results(s3, outputs["ResultsBucket"], outputs["ResultsPrefix"], truth).values()
    return {r["model"]["sha256"] for r in results if r}


def test_batch_job_over_a_prefix_completes_with_its_summary(stack, artifacts, tmp_path):
    target, outputs = stack
    s3, sqs = _clients(target)
    models.upload(s3, outputs["ArtifactsBucket"], outputs["ModelPointerKey"], artifacts[0], progress=False)
    bucket, prefix = outputs["ImagesBucket"], f"{outputs['ImagesPrefix']}job/"
    truth = flow.drop_images(s3, bucket, prefix, 12, seed=7200)
    config = _config(target, tmp_path)
    flow.run_agent(target, config, tmp_path, "--burst")  # the S3 events of the upload itself
    (tmp_path / "agent.json").write_text(json.dumps(config))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "submit",
            f"s3://{bucket}/{prefix}",
            "--job-id",
            "e2e-job",
            "--config",
            str(tmp_path / "agent.json"),
        ],
        cwd=REPO,
        env=target.env(),
        check=True,
    )
    run = flow.run_agent(target, config, tmp_path, "--burst")
    assert run.code == 0, run.log[-5:]
    key = f"{outputs['ResultsPrefix']}_jobs/e2e-job/summary.json"
    summary = json.loads(s3.get_object(Bucket=outputs["ResultsBucket"], Key=key)["Body"].read())
    assert summary["images"] == summary["done"] == len(truth) and summary["failed"] == 0, summary
    assert flow.queue_depth(sqs, outputs["QueueUrl"]) == 0
    assert flow.queue_depth(sqs, outputs["DeadLetterQueueUrl"]) == 0


def _count(s3, outputs, truth) -> int:
    results = flow.read_results(s3, outputs["ResultsBucket"], outputs["ResultsPrefix"], truth)
    return sum(r is not None for r in results.values())


def _wait(condition, agent, log_path: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert agent.poll() is None, f"agent exited early with {agent.returncode}: {log_path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for results"
        time.sleep(0.5)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_demo_captioner_through_its_pt2_is_at_least_95_percent_exact(artifacts, fmt):
    from demo.accuracy import accuracy

    value, misses, _ = accuracy(str(artifacts[0]), 200, seed=424242, fmt=fmt)
    assert value >= 0.95, misses[:10]
