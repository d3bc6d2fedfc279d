"""The wake-up function against the local AWS: 0 becomes 1, more is left alone, looks are rate-limited."""

from __future__ import annotations

import json
import uuid

import pytest

from runtime import aws
from runtime.agent import submit
from runtime.lambdas.wake_on_upload import wake


def desired(group: str) -> int:
    [found] = aws.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    return found["DesiredCapacity"]


@pytest.fixture
def group(aws) -> str:
    """A workers group at desired 0 (max 2) in moto, uniquely named."""
    from runtime import aws as clients

    name = f"workers-{uuid.uuid4().hex[:8]}"
    clients.client("ec2").create_launch_template(
        LaunchTemplateName=f"lt-{name}", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge"}
    )
    clients.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": f"lt-{name}"},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=0,
        AvailabilityZones=["us-east-1a"],
    )
    return name


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_the_handler_sets_a_group_at_zero_to_one(group, monkeypatch):
    monkeypatch.setenv(wake.GROUP_ENV, group)
    monkeypatch.setattr(wake, "_last_look", {})
    result = wake.handler({"source": "aws.s3", "detail-type": "Object Created"}, None)
    assert result == {"action": "woke", "group": group, "desired": 1}
    assert desired(group) == 1


def test_a_group_already_above_zero_is_left_alone(group):
    aws.client("autoscaling").set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=2)
    result = wake.wake(aws.client("autoscaling"), group, last_look={})
    assert result["action"] == "none" and result["desired"] == 2
    assert desired(group) == 2  # never lowered


def test_looks_are_rate_limited_to_one_per_interval(group):
    client, clock, looks = aws.client("autoscaling"), Clock(), {}
    client.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=1)
    assert wake.wake(client, group, min_interval_s=60, now=clock, last_look=looks)["action"] == "none"
    client.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=0)  # scaled in meanwhile
    clock.t += 59
    assert wake.wake(client, group, min_interval_s=60, now=clock, last_look=looks)["action"] == "skipped"
    assert desired(group) == 0  # the skipped call made no Auto Scaling call
    clock.t += 2
    assert wake.wake(client, group, min_interval_s=60, now=clock, last_look=looks)["action"] == "woke"
    assert desired(group) == 1


def test_a_missing_group_is_an_error_that_says_what_to_do(aws):
    with pytest.raises(LookupError, match="does not exist; expected the stack's workers group.*redeploy"):
        wake.wake(wake.boto3.client("autoscaling"), "no-such-group", last_look={})


def test_submit_wakes_the_fleet_after_queueing_the_job(stack, group, capsys):
    path = stack.write_config(asg_name=group)
    assert submit.main([f"s3://{stack.images}/incoming/set/", "--job-id", "wake-1", "--config", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["job_id"] == "wake-1" and printed["wake"] == "woke"
    assert desired(group) == 1 and stack.counts()["visible"] == 1


def test_submit_still_queues_the_job_when_it_cannot_wake(stack, capsys):
    path = stack.write_config(asg_name="no-such-group")
    assert submit.main([f"s3://{stack.images}/incoming/set/", "--job-id", "wake-2", "--config", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["wake"].startswith("not woken (LookupError") and stack.counts()["visible"] == 1
