"""One agent per GPU: life locks, the lifecycle hook completed once per instance, a shared cache downloaded once,
and the Gpu metric dimension."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time

import boto3
import pytest
from botocore.stub import Stubber

from runtime.agent.config import AgentConfig, ConfigError, load_config
from runtime.agent.lifecycle import Lifecycle, WarmPoolGate
from runtime.agent.metrics import GPU_DIMENSION, batch_metrics
from runtime.agent.model.pointer import fetch_artifact
from runtime.agent.siblings import SiblingError, Siblings, complete_for_instance
from tools.paths import REPO

HOOK = {
    "LifecycleHookName": "drain",
    "AutoScalingGroupName": "captioners",
    "LifecycleActionResult": "CONTINUE",
    "InstanceId": "i-0123456789abcdef0",
}


def _config(tmp_path, index: int, **overrides) -> AgentConfig:
    return AgentConfig(
        agent_index=index,
        agent_count=2,
        agents_dir=str(tmp_path / "agents"),
        asg_name="captioners",
        lifecycle_hook_name="drain",
        launch_hook_name="ready",
        drain_timeout_s=5,
        imds_poll_s=0.1,
        **overrides,
    )


def _autoscaling():
    client = boto3.session.Session().client(
        "autoscaling",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        endpoint_url="http://127.0.0.1:9",
    )
    return client, Stubber(client)


def _other_agent(tmp_path, index: int, hold_s: float) -> subprocess.Popen:
    """A process that runs as agent `index`: it takes its life lock, says so, then lives `hold_s` seconds."""
    code = (
        "import time; from runtime.agent.config import AgentConfig; "
        "from runtime.agent.siblings import Siblings; "
        f"s = Siblings(AgentConfig(agent_index={index}, agent_count=2, agents_dir={str(tmp_path / 'agents')!r})); "
        "s.hold(); "
        f"print('held', flush=True); time.sleep({hold_s})"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_agent_0_completes_the_terminating_hook_once_the_other_agent_has_exited(tmp_path, imds):
    other = _other_agent(tmp_path, 1, hold_s=1.5)
    config = _config(tmp_path, 0, imds_url=imds.url)
    siblings = Siblings(config)
    siblings.hold()
    assert siblings.running() == [1]
    client, stubber = _autoscaling()
    stubber.add_response("complete_lifecycle_action", {}, expected_params=HOOK)
    lifecycle = Lifecycle(config, print, autoscaling=client)
    lifecycle._refresh_token()
    imds.lifecycle = "Terminated"
    assert lifecycle.check() == "lifecycle: Terminated"
    with stubber:
        complete_for_instance(lifecycle, siblings, config)
        assert other.poll() is not None  # completed only after agent 1 had gone
    stubber.assert_no_pending_responses()


def test_the_other_agents_complete_no_hook(tmp_path, imds):
    config = _config(tmp_path, 1, imds_url=imds.url)
    client, stubber = _autoscaling()  # nothing queued: any call fails the test
    lifecycle = Lifecycle(config, print, autoscaling=client)
    lifecycle._refresh_token()
    imds.lifecycle = "Terminated"
    lifecycle.check()
    with stubber:
        complete_for_instance(lifecycle, Siblings(config), config)
        WarmPoolGate(lifecycle, client).ready()


def test_agent_0_stops_waiting_for_an_agent_past_its_drain_bound(tmp_path):
    other = _other_agent(tmp_path, 1, hold_s=30)
    try:
        started = time.monotonic()
        assert Siblings(_config(tmp_path, 0)).wait_for_others(0.5, poll_s=0.1) == [1]
        assert time.monotonic() - started < 5
    finally:
        other.kill()
        other.wait()
    assert Siblings(_config(tmp_path, 0)).wait_for_others(0.5) == []  # a killed agent's lock is gone with it


def test_a_second_process_as_the_same_agent_is_refused(tmp_path):
    first = Siblings(_config(tmp_path, 1))
    first.hold()
    with pytest.raises(SiblingError, match="another process runs as agent 1"):
        Siblings(_config(tmp_path, 1)).hold()


def test_an_agent_alone_on_its_instance_needs_no_lock(tmp_path):
    siblings = Siblings(AgentConfig())
    siblings.hold()
    assert siblings.lead and siblings.wait_for_others(10) == []


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CAPTIONKIT_AGENT_COUNT": "2"}, "agents_dir set"),
        (
            {"CAPTIONKIT_AGENT_COUNT": "2", "CAPTIONKIT_AGENT_INDEX": "2", "CAPTIONKIT_AGENTS_DIR": "/tmp/x"},
            "index < count",
        ),
    ],
)
def test_agent_index_and_count_are_checked(env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ=env)


class _SlowS3:
    """download_file writes the body in pieces, slowly enough that two unguarded downloads would interleave."""

    def __init__(self, body: bytes):
        self.body, self.calls = body, 0

    def download_file(self, bucket, key, filename):
        self.calls += 1
        with open(filename, "wb") as out:
            for start in range(0, len(self.body), 1024):
                out.write(self.body[start : start + 1024])
                out.flush()
                time.sleep(0.005)


def test_agents_sharing_a_cache_download_the_artifact_once_and_intact(tmp_path):
    body = bytes(range(256)) * 64
    pointer = {"key": "models/a.pt2", "sha256": hashlib.sha256(body).hexdigest()}
    s3, paths, errors = _SlowS3(body), [], []

    def fetch():
        try:
            paths.append(fetch_artifact(s3, "artifacts", pointer, str(tmp_path / "cache")))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and len(paths) == 3 and len(set(paths)) == 1
    assert paths[0].read_bytes() == body and s3.calls == 1


def test_batch_metrics_also_go_out_per_gpu_when_the_agent_names_its_gpu():
    config = AgentConfig(queue_url="https://sqs.us-east-1.amazonaws.com/1/jobs", gpu="i-0abc/1")
    fields = batch_metrics(
        config, messages=3, message_images=3, done=3, failed=0, size=3, device_s=0.5, latencies_s=[1.0], waits_s=[0.1]
    )
    assert fields["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Queue"], [GPU_DIMENSION, "Queue"]]
    assert fields[GPU_DIMENSION] == "i-0abc/1" and fields["Queue"] == "jobs" and fields["ImagesDone"] == 3
    alone = batch_metrics(
        AgentConfig(queue_url=config.queue_url),
        messages=3,
        message_images=3,
        done=3,
        failed=0,
        size=3,
        device_s=0.5,
        latencies_s=[1.0],
        waits_s=[0.1],
    )
    assert alone["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Queue"]] and GPU_DIMENSION not in alone
