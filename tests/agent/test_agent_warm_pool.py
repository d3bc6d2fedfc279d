"""The warm pool gate against a fake IMDSv2: prepare (model loaded, hook completed), no work, re-check on resume."""

from __future__ import annotations

import threading
import time

from test_agent_lifecycle import HOOK, _autoscaling, _config

from agent_support import png
from runtime.agent.lifecycle import Lifecycle, WarmPoolGate, load_for_service
from runtime.registry import POINTER_KEY

READY = {**HOOK, "LifecycleHookName": "ready"}


def gate_for(stack, imds, client):
    config = stack.config(
        imds_url=imds.url,
        imds_poll_s=0.05,
        asg_name="captioners",
        lifecycle_hook_name="drain",
        launch_hook_name="ready",
    )
    return config, WarmPoolGate(Lifecycle(config, None), client)


def start(config, stack, gate):
    out = {}
    thread = threading.Thread(target=lambda: out.update(loaded=load_for_service(config, stack.s3, "cpu", gate)))
    thread.start()
    return thread, out


def wait_for(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_an_instance_prepared_for_the_pool_loads_the_model_says_ready_and_takes_no_work(stack, imds, agent_log):
    client, stubber = _autoscaling()
    stubber.add_response("complete_lifecycle_action", {}, expected_params=READY)
    stack.put("incoming/a.png", png())
    stack.send_event("incoming/a.png")
    imds.lifecycle = "Warmed:Stopped"
    config, gate = gate_for(stack, imds, client)
    with stubber:
        thread, out = start(config, stack, gate)
        assert wait_for(lambda: agent_log.events("warm_pool_waiting"))
        stubber.assert_no_pending_responses()  # the launch hook was completed once the model was loaded
        assert agent_log.events("model_fetched") and thread.is_alive()
        time.sleep(0.3)
        assert stack.counts() == {"visible": 1, "in_flight": 0}  # nothing was received
        imds.lifecycle = "InService"  # resumed without a restart (a Running pool)
        thread.join(10)
    captioner, pointer = out["loaded"]
    assert pointer["sha256"] == captioner.sha256 and not agent_log.events("model_moved_while_warmed")


def test_a_model_published_while_in_the_pool_is_loaded_before_the_first_batch(stack, imds, agent_log):
    client, stubber = _autoscaling()
    stubber.add_response("complete_lifecycle_action", {}, expected_params=READY)
    imds.lifecycle = "Warmed:Stopped"
    config, gate = gate_for(stack, imds, client)
    with stubber:
        thread, out = start(config, stack, gate)
        assert wait_for(lambda: agent_log.events("warm_pool_waiting"))
        newer = stack.publish("fake-b")
        imds.lifecycle = "InService"
        thread.join(10)
    captioner, pointer = out["loaded"]
    assert pointer["sha256"] == newer["sha256"] == captioner.sha256
    assert agent_log.events("model_moved_while_warmed")[0]["new"] == newer["sha256"]


def test_a_pool_prepared_before_the_first_upload_waits_for_the_model_after_resume(stack, imds, agent_log):
    client, stubber = _autoscaling()
    stubber.add_response("complete_lifecycle_action", {}, expected_params=READY)
    stack.s3.delete_object(Bucket=stack.artifacts, Key=POINTER_KEY)
    imds.lifecycle = "Warmed:Stopped"
    config, gate = gate_for(stack, imds, client)
    with stubber:
        thread, out = start(config, stack, gate)
        assert wait_for(lambda: agent_log.events("warm_pool_waiting"))
        assert agent_log.events("warm_pool_without_model")
        stubber.assert_no_pending_responses()  # an installed instance without a model still goes into the pool
        first = stack.publish("fake-c")
        imds.lifecycle = "InService"
        thread.join(10)
    assert out["loaded"][1]["sha256"] == first["sha256"]


def test_a_resumed_instance_reads_the_pointer_then_completes_the_hook_to_go_in_service(stack, imds, agent_log):
    client, stubber = _autoscaling()
    stubber.add_response("complete_lifecycle_action", {}, expected_params=READY)
    config, gate = gate_for(stack, imds, client)  # target InService: Pending:Wait after a start from the pool
    with stubber:
        captioner, pointer = load_for_service(config, stack.s3, "cpu", gate)
        stubber.assert_no_pending_responses()
    assert agent_log.events("launch_hook_completed") and not agent_log.events("warm_pool_waiting")
    assert pointer["sha256"] == captioner.sha256


def test_no_pending_launch_action_is_logged_not_fatal(stack, imds, agent_log):
    client, stubber = _autoscaling()
    stubber.add_client_error("complete_lifecycle_action", "ValidationError", "No active Lifecycle Action found")
    config, gate = gate_for(stack, imds, client)
    with stubber:
        load_for_service(config, stack.s3, "cpu", gate)
    assert "No active Lifecycle Action" in agent_log.events("launch_hook_not_completed")[0]["reason"]


def test_scale_in_back_to_the_pool_drains_like_a_termination(imds):
    client, stubber = _autoscaling()
    stubber.add_response("complete_lifecycle_action", {}, expected_params=HOOK)
    lifecycle = Lifecycle(_config(imds.url), print, autoscaling=client)
    lifecycle._refresh_token()
    imds.lifecycle = "Warmed:Stopped"
    assert lifecycle.check() == "lifecycle: Warmed:Stopped"
    with stubber:
        lifecycle.complete()  # the terminating (drain) hook holds an instance returning to the pool
    stubber.assert_no_pending_responses()
