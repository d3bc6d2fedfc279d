"""Wake the fleet from zero: set the workers' desired capacity to 1 when it is 0, at most once a minute.

One file with boto3 only, for two callers: the stack's wake-up Lambda function (this folder is its whole code
asset, shipped by stacks/wake_on_upload.py; handler `wake.handler`; the Lambda Python runtime provides boto3) and
`python -m runtime submit` on a laptop.
It never lowers the capacity and never raises a capacity above 0: the backlog scaling does the rest.
"""

from __future__ import annotations

import os
import time

import boto3

GROUP_ENV = "GROUP_NAME"
INTERVAL_ENV = "MIN_INTERVAL_S"
DEFAULT_INTERVAL_S = 60.0
_last_look: dict[str, float] = {}  # group name -> monotonic time of the last look (survives warm invocations)


def wake(
    autoscaling,
    group_name: str,
    *,
    min_interval_s: float = DEFAULT_INTERVAL_S,
    now=time.monotonic,
    last_look: dict[str, float] = _last_look,
) -> dict:
    """Ask for one instance if the group is at zero; a dict says what was done ("woke", "none", "skipped").

    Rate limit: after a look, further calls within `min_interval_s` return "skipped" without calling AWS.
    A missing group raises LookupError (the stack and the function disagree: redeploy).
    """
    started = now()
    previous = last_look.get(group_name)
    if previous is not None and started - previous < min_interval_s:
        return {"action": "skipped", "group": group_name, "last_look_s_ago": round(started - previous, 1)}
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"]
    if not groups:
        raise LookupError(
            f"auto scaling group {group_name!r} does not exist; expected the stack's workers group "
            f"(the {GROUP_ENV} of this function): redeploy the stack"
        )
    last_look[group_name] = started
    desired, maximum = groups[0]["DesiredCapacity"], groups[0]["MaxSize"]
    if desired > 0 or maximum < 1:
        return {"action": "none", "group": group_name, "desired": desired, "max": maximum}
    # HonorCooldown=False: the cooldown after the last scale-in to zero must not delay the first image.
    autoscaling.set_desired_capacity(AutoScalingGroupName=group_name, DesiredCapacity=1, HonorCooldown=False)
    return {"action": "woke", "group": group_name, "desired": 1}


def wake_quietly(autoscaling, group_name: str) -> str:
    """`wake` for a laptop command: the action taken, or why not (a missing permission is not a failure)."""
    try:
        return wake(autoscaling, group_name, min_interval_s=0)["action"]
    except Exception as exc:  # noqa: BLE001 - the job is queued; the backlog scaling still wakes the fleet
        return f"not woken ({exc.__class__.__name__}: {exc}); the queue's metrics will start a worker within minutes"


def handler(event, context) -> dict:
    """The Lambda entry point (an EventBridge "Object Created" event; its content is not needed)."""
    result = wake(
        boto3.client("autoscaling"),
        os.environ[GROUP_ENV],
        min_interval_s=float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)),
    )
    print(result)  # one line in the function's log group per invocation
    return result
