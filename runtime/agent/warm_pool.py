"""The warm pool gate: an instance prepared for the pool loads its model, says it is ready, and takes no work.

With a warm pool the group launches an instance, holds it in Warmed:Pending:Wait (the launch hook) while the boot
installs the runtime and the agent downloads and loads the current model, then stops it once the hook is
completed. A scale-out starts it again (Pending:Wait, then InService): the agent starts afresh, reads the model
pointer, finds the .pt2 in its cache (or fetches the new one) and completes the hook again.
See https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pool-instance-lifecycle.html
"""
from __future__ import annotations

import time

from runtime.agent.lifecycle import WARMED, Lifecycle
from runtime.agent.metrics import log
from runtime.agent.pointer import load_current, wait_for_model
from runtime.registry import NoModelYet, read_pointer


class WarmPoolGate:
    """Reads the target lifecycle state and completes the launch hook (`config.launch_hook_name`)."""

    def __init__(self, lifecycle: Lifecycle, autoscaling, *, sleep=time.sleep):
        self.lifecycle, self.autoscaling, self.sleep = lifecycle, autoscaling, sleep
        self.config = lifecycle.config

    def preparing(self) -> bool:
        """True while the group's target for this instance is the warm pool (Warmed:*)."""
        return (self.lifecycle.target_state() or "").startswith(WARMED)

    def ready(self) -> None:
        """Complete the launch hook: in the pool's preparation AWS then stops the instance, else it goes in service."""
        if self.config.agent_index:  # the hook holds the instance: agent 0 completes it (runtime/agent/siblings.py)
            return
        try:
            self.autoscaling.complete_lifecycle_action(
                LifecycleHookName=self.config.launch_hook_name, AutoScalingGroupName=self.config.asg_name,
                LifecycleActionResult="CONTINUE", InstanceId=self.lifecycle.instance_id())
            log("info", event="launch_hook_completed", hook=self.config.launch_hook_name)
        except Exception as exc:  # noqa: BLE001 - no action pending (a restarted agent): nothing is held
            log("warning", event="launch_hook_not_completed", hook=self.config.launch_hook_name,
                reason=f"{exc.__class__.__name__}: {exc}")

    def wait_in_service(self) -> None:
        """Block while the target stays Warmed:* (the stop normally ends this process first)."""
        while self.preparing():
            log("info", event="warm_pool_waiting", note="prepared: waiting to be stopped or put in service")
            self.sleep(self.config.imds_poll_s)


def load_for_service(config, s3, device, gate: WarmPoolGate | None, *, burst: bool = False):
    """Step 3 of the agent: the current model, and no work while the instance is prepared for the warm pool.

    Returns (captioner, pointer). Without a gate (no launch hook configured) this is `wait_for_model`.
    """
    if gate is None:
        return (load_current if burst else wait_for_model)(config, s3, device)
    if not gate.preparing():
        loaded = wait_for_model(config, s3, device)
        gate.ready()
        return loaded
    try:
        loaded = load_current(config, s3, device)
    except NoModelYet as exc:  # nothing to download yet: the pool holds an installed instance
        log("warning", event="warm_pool_without_model", reason=str(exc))
        loaded = None
    gate.ready()
    gate.wait_in_service()
    # resumed in this process: the pointer may have moved while the instance was in the pool
    if loaded is None:
        return wait_for_model(config, s3, device)
    pointer = read_pointer(s3, config.artifacts_bucket, config.model_pointer)
    if pointer["sha256"] != loaded[1]["sha256"]:
        log("info", event="model_moved_while_warmed", old=loaded[1]["sha256"], new=pointer["sha256"])
        return load_current(config, s3, device, pointer)
    return loaded
