"""This instance's life in its auto scaling group: termination notices from instance metadata (IMDSv2: a lifecycle
hook or a spot interruption), and the warm pool gate.

With a warm pool the group launches an instance, holds it in Warmed:Pending:Wait (the launch hook) while the boot
installs the runtime and the agent downloads and loads the current model, then stops it once the hook is
completed. A scale-out starts it again (Pending:Wait, then InService): the agent starts afresh, reads the model
pointer, finds the .pt2 in its cache (or fetches the new one) and completes the hook again.
See https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pool-instance-lifecycle.html
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

from runtime.agent.metrics import log
from runtime.agent.model.pointer import load_current, wait_for_model
from runtime.registry import NoModelYet, read_pointer

TOKEN_TTL_S = 21_600
TARGET_STATE = "autoscaling/target-lifecycle-state"
WARMED = "Warmed:"  # Warmed:Pending, Warmed:Stopped, ...: the instance is (going) into the warm pool
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # IMDS is link-local: never proxy it


class Lifecycle:
    """Polls IMDS every `imds_poll_s` and calls `on_notice(reason)` once; disabled off EC2."""

    def __init__(self, config, on_notice, autoscaling=None, timeout_s: float = 1.0):
        self.config, self.on_notice, self.autoscaling, self.timeout_s = config, on_notice, autoscaling, timeout_s
        self.base = config.imds_url.rstrip("/")
        self.terminating = False  # the auto scaling group is terminating this instance
        self._token = ""
        self._stop = threading.Event()

    def start(self) -> bool:
        """Start polling if IMDS answers; False (and a log line) when not on EC2."""
        if not self.base:
            return False
        try:
            self._refresh_token()
        except OSError as exc:
            log(
                "info",
                event="imds_unavailable",
                url=self.base,
                reason=str(exc),
                note="not on EC2: no lifecycle hook or spot notices",
            )
            return False
        threading.Thread(target=self._run, name="lifecycle", daemon=True).start()
        return True

    def stop(self) -> None:
        self._stop.set()

    def _refresh_token(self) -> None:
        request = urllib.request.Request(
            f"{self.base}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
        )
        with _OPENER.open(request, timeout=self.timeout_s) as reply:
            self._token = reply.read().decode()

    def _get(self, path: str) -> str | None:
        """GET a metadata path: its text, or None when it is absent (404)."""
        for attempt in range(2):
            request = urllib.request.Request(
                f"{self.base}/latest/meta-data/{path}", headers={"X-aws-ec2-metadata-token": self._token}
            )
            try:
                with _OPENER.open(request, timeout=self.timeout_s) as reply:
                    return reply.read().decode()
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0:
                    self._refresh_token()
                    continue
                if exc.code == 404:
                    return None
                raise
        return None

    def target_state(self) -> str | None:
        """The group's target lifecycle state for this instance ('InService', 'Warmed:Stopped', ...), if known."""
        if not self._token:
            self._refresh_token()
        return self._get(TARGET_STATE)

    def check(self) -> str | None:
        """The reason to drain now ('lifecycle: Terminated', 'spot: terminate at ...'), else None."""
        state = self._get(TARGET_STATE)
        # Warmed:*: scale-in with instance reuse sends this instance back to the warm pool; the terminating
        # hook holds it (in Warmed:Pending:Wait) just as it holds a termination (EC2 Auto Scaling user guide,
        # https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pool-instance-lifecycle.html)
        if state == "Terminated" or (state or "").startswith(WARMED):
            self.terminating = True
            return f"lifecycle: {state}"
        notice = self._get("spot/instance-action")
        if notice:
            try:
                notice = json.loads(notice)
                return f"spot: {notice.get('action')} at {notice.get('time')}"
            except (ValueError, AttributeError):
                return f"spot: {notice}"
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.config.imds_poll_s):
            try:
                reason = self.check()
            except OSError as exc:
                log("warning", event="imds_error", reason=str(exc))
                continue
            if reason:
                log("info", event="termination_notice", reason=reason)
                self.on_notice(reason)
                return

    def complete(self) -> None:
        """After the drain, tell the auto scaling group to go on terminating (if a hook is holding it)."""
        if not self.terminating:
            return
        if not (self.config.asg_name and self.config.lifecycle_hook_name and self.autoscaling):
            log(
                "warning",
                event="lifecycle_not_completed",
                reason="asg_name or lifecycle_hook_name is not set; the hook will time out instead",
            )
            return
        instance_id = self.instance_id()
        self.autoscaling.complete_lifecycle_action(
            LifecycleHookName=self.config.lifecycle_hook_name,
            AutoScalingGroupName=self.config.asg_name,
            LifecycleActionResult="CONTINUE",
            InstanceId=instance_id,
        )
        log("info", event="lifecycle_completed", instance_id=instance_id, asg=self.config.asg_name)

    def instance_id(self) -> str | None:
        """This instance's id from instance metadata."""
        return self._get("instance-id")


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
                LifecycleHookName=self.config.launch_hook_name,
                AutoScalingGroupName=self.config.asg_name,
                LifecycleActionResult="CONTINUE",
                InstanceId=self.lifecycle.instance_id(),
            )
            log("info", event="launch_hook_completed", hook=self.config.launch_hook_name)
        except Exception as exc:  # noqa: BLE001 - no action pending (a restarted agent): nothing is held
            log(
                "warning",
                event="launch_hook_not_completed",
                hook=self.config.launch_hook_name,
                reason=f"{exc.__class__.__name__}: {exc}",
            )

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
