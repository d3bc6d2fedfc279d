"""Termination notices (IMDSv2 on a local fake), lifecycle completion (botocore Stubber), drain bounds."""

from __future__ import annotations

import threading
import time

import boto3
from botocore.stub import Stubber

from agent_support import png
from runtime.agent.config import AgentConfig
from runtime.agent.lifecycle import Lifecycle
from runtime.agent.worker import DRAIN_TIMEOUT_EXIT
from tools.local_aws import free_port

HOOK = {
    "LifecycleHookName": "drain",
    "AutoScalingGroupName": "captioners",
    "LifecycleActionResult": "CONTINUE",
    "InstanceId": "i-0123456789abcdef0",
}


def _autoscaling():
    client = boto3.session.Session().client(
        "autoscaling",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        endpoint_url="http://127.0.0.1:9",
    )
    return client, Stubber(client)


def _config(url: str, **overrides) -> AgentConfig:
    return AgentConfig(imds_url=url, imds_poll_s=0.1, asg_name="captioners", lifecycle_hook_name="drain", **overrides)


def test_no_instance_metadata_means_no_lifecycle_watch():
    started = time.monotonic()
    assert Lifecycle(_config(f"http://127.0.0.1:{free_port()}"), print, timeout_s=0.5).start() is False
    assert Lifecycle(_config(""), print).start() is False
    assert time.monotonic() - started < 3


def test_auto_scaling_termination_is_noticed_and_the_action_completed(imds):
    client, stubber = _autoscaling()
    stubber.add_response("complete_lifecycle_action", {}, expected_params=HOOK)
    lifecycle = Lifecycle(_config(imds.url), print, autoscaling=client)
    lifecycle._refresh_token()
    assert lifecycle.check() is None
    imds.lifecycle = "Terminated"
    assert lifecycle.check() == "lifecycle: Terminated"
    with stubber:
        lifecycle.complete()
    stubber.assert_no_pending_responses()


def test_spot_interruption_is_noticed_and_needs_no_lifecycle_action(imds):
    client, stubber = _autoscaling()  # no responses queued: any call would fail
    lifecycle = Lifecycle(_config(imds.url), print, autoscaling=client)
    lifecycle._refresh_token()
    imds.spot = '{"action": "terminate", "time": "2026-11-27T08:22:00Z"}'
    assert lifecycle.check() == "spot: terminate at 2026-11-27T08:22:00Z"
    with stubber:
        lifecycle.complete()


def test_an_expired_metadata_token_is_renewed(imds):
    lifecycle = Lifecycle(_config(imds.url), print)
    lifecycle._refresh_token()
    imds.token = "rotated"
    imds.lifecycle = "Terminated"
    assert lifecycle.check() == "lifecycle: Terminated"
    assert imds.requests.count("PUT /latest/api/token") == 2


def test_termination_notice_drains_the_agent_then_completes_the_lifecycle_action(stack, imds, agent_log):
    client, stubber = _autoscaling()
    stubber.add_response("complete_lifecycle_action", {}, expected_params=HOOK)
    config = stack.config(imds_url=imds.url, imds_poll_s=0.1, asg_name="captioners", lifecycle_hook_name="drain")
    worker = stack.worker(config)
    lifecycle = Lifecycle(config, worker.stop, autoscaling=client)
    worker.on_exit.append(lifecycle.complete)
    for n in range(3):
        stack.put(f"incoming/{n}.png", png())
        stack.send_event(f"incoming/{n}.png")
    with stubber:
        assert lifecycle.start()
        runner = threading.Thread(target=worker.run)
        runner.start()
        deadline = time.monotonic() + 20
        while len(stack.keys()) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        imds.lifecycle = "Terminated"
        runner.join(20)
    assert not runner.is_alive()
    stubber.assert_no_pending_responses()
    assert agent_log.events("draining")[0]["reason"] == "lifecycle: Terminated"
    assert agent_log.events("shutdown")[0]["done"] == 3


def test_a_drain_past_its_bound_releases_held_messages_and_exits_nonzero(stack, agent_log):
    stack.publish("fake-slow", delay_s=3.0)
    stack.put("incoming/slow.png", png())
    stack.send_event("incoming/slow.png")
    worker = stack.worker(stack.config(drain_timeout_s=0.5, visibility_timeout_s=60))
    exits = []
    worker.force_exit = exits.append
    runner = threading.Thread(target=worker.run)
    runner.start()
    while not worker.model.captioned and not worker.inbox.held():
        time.sleep(0.05)
    time.sleep(0.3)
    worker.stop("test")
    time.sleep(1.0)
    assert exits == [DRAIN_TIMEOUT_EXIT]
    assert stack.counts()["visible"] == 1  # back in the queue at once, not after 60 s
    runner.join(20)
    assert agent_log.events("drain_timeout")
