"""The warm pool option: stopped, prepared workers behind a launch hook; the combinations AWS refuses are refused."""

import json

import pytest
from aws_cdk.assertions import Match, Template

from stacks.settings import Settings, SettingsError
from stacks.synth import synthesize

WARM = (("warm_pool", "true"), ("warm_pool_size", "2"), ("max_capacity", "3"))


@pytest.fixture(scope="module")
def warm():
    return synthesize(WARM)


@pytest.fixture(scope="module")
def template(warm):
    return Template.from_json(warm.template)


def test_a_warm_pool_of_exactly_n_stopped_instances_reused_on_scale_in(template):
    template.has_resource_properties(
        "AWS::AutoScaling::WarmPool",
        {
            "MinSize": 2,
            "MaxGroupPreparedCapacity": 2,
            "PoolState": "Stopped",
            "InstanceReusePolicy": {"ReuseOnScaleIn": True},
            "AutoScalingGroupName": {"Ref": Match.string_like_regexp("Group")},
        },
    )


def test_the_warm_group_uses_a_plain_launch_template_with_its_one_on_demand_type(template):
    template.has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup",
        {
            "MixedInstancesPolicy": Match.absent(),
            "CapacityRebalance": False,
            "MinSize": "0",
            "MaxSize": "3",
            "LaunchTemplate": Match.object_like({"LaunchTemplateId": Match.any_value()}),
        },
    )
    template.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": Match.object_like(
                {"InstanceType": "g5.xlarge", "InstanceMarketOptions": Match.absent()}
            )
        },
    )


def test_a_launch_hook_holds_each_instance_until_its_agent_has_the_model(warm, template):
    template.has_resource_properties(
        "AWS::AutoScaling::LifecycleHook",
        {
            "LifecycleHookName": "captionkit-ready",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "DefaultResult": "ABANDON",
            "HeartbeatTimeout": 1800,
        },
    )
    # the drain hook stays: scale-in (to the pool or out) waits for the batch in hand
    template.has_resource_properties(
        "AWS::AutoScaling::LifecycleHook",
        {"LifecycleHookName": "captionkit-drain", "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"},
    )
    assert warm.stack.fleet.agent_config["launch_hook_name"] == "captionkit-ready"


def test_a_resumed_worker_counts_as_warm_after_two_minutes_not_ten(template):
    [policy] = template.find_resources(
        "AWS::AutoScaling::ScalingPolicy", {"Properties": {"PolicyType": "TargetTrackingScaling"}}
    ).values()
    assert policy["Properties"]["EstimatedInstanceWarmup"] == 120


def test_without_the_option_there_is_no_pool_and_no_launch_hook():
    template = Template.from_json(synthesize().template)
    template.resource_count_is("AWS::AutoScaling::WarmPool", 0)
    assert not template.find_resources(
        "AWS::AutoScaling::LifecycleHook", {"Properties": {"LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING"}}
    )
    assert "launch_hook_name" not in json.loads(synthesize().stack.fleet.agent_config_json)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"spot": True}, "warm_pool=true with spot=true"),
        ({"instance_types": ("g5.xlarge", "g6.xlarge")}, "a warm pool takes exactly one on-demand instance type"),
    ],
)
def test_combinations_aws_refuses_are_refused_with_the_reason(values, message):
    with pytest.raises(SettingsError) as refused:
        Settings(warm_pool=True, **values)
    assert message in str(refused.value)
    assert "AWS refuses a warm pool on a group with a mixed instances policy or Spot Instances" in str(refused.value)
    Settings(warm_pool=False, **values)  # the same fleet without a pool is fine


@pytest.mark.parametrize("size", [0, 3])
def test_the_pool_holds_one_to_max_capacity_instances(size):
    with pytest.raises(SettingsError, match=f"warm_pool_size={size}: expected 1..max_capacity=2"):
        Settings(warm_pool=True, warm_pool_size=size, max_capacity=2)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"images_per_s_per_instance": 0.0}, "expected a measured rate above 0"),
        ({"accepted_latency_s": 5}, "a latency of 10..86400 s"),
        ({"images_per_s_per_instance": 0.05, "accepted_latency_s": 10}, "must be at least one image"),
    ],
)
def test_a_backlog_target_below_one_image_is_refused(values, message):
    with pytest.raises(SettingsError, match=message):
        Settings(**values)


def test_the_rate_reads_as_a_decimal_from_the_command_line():
    assert Settings.from_mapping({"images_per_s_per_instance": "2.5"}).backlog_per_instance == 300
    with pytest.raises(SettingsError, match=r"images_per_s_per_instance='fast': expected a number"):
        Settings.from_mapping({"images_per_s_per_instance": "fast"})
