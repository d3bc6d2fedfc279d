"""`make status` per GPU: the GPUs the running instances carry, and each GPU's images and device share in the
last hour, read from the agents' Gpu metric dimension (CloudWatch in moto, in-process)."""

import datetime

import boto3
from moto import mock_aws

from runtime.agent.metrics import CAPTURE_FAILED, DEVICE_TIME, GPU_DIMENSION, IMAGES_DONE
from tools import fleet_view, status

NOW = datetime.datetime.now(datetime.UTC)


def _put(cloudwatch, metric, gpu, value, queue="jobs"):
    dims = [{"Name": "Queue", "Value": queue}, *([{"Name": GPU_DIMENSION, "Value": gpu}] if gpu else [])]
    cloudwatch.put_metric_data(
        Namespace="CaptionKit",
        MetricData=[
            {"MetricName": metric, "Dimensions": dims, "Timestamp": NOW - datetime.timedelta(minutes=5), "Value": value}
        ],
    )


@mock_aws
def test_each_gpu_that_reported_shows_its_images_and_device_share_least_busy_last():
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    for gpu, done, device_ms in (("i-0a/0", 120, 1_800_000), ("i-0a/1", 30, 360_000), ("i-0a/2", 0, 0)):
        _put(cloudwatch, IMAGES_DONE, gpu, done), _put(cloudwatch, DEVICE_TIME, gpu, device_ms)
    _put(cloudwatch, IMAGES_DONE, None, 150)  # the fleet total (Queue only) is not a GPU
    _put(cloudwatch, IMAGES_DONE, "i-0b/0", 99, queue="another-stack")
    rows = fleet_view.per_gpu(cloudwatch, "CaptionKit", "jobs", NOW)
    assert rows == [
        {"gpu": "i-0a/0", "done": 120, "device_share": 0.5},
        {"gpu": "i-0a/1", "done": 30, "device_share": 0.1},
        {"gpu": "i-0a/2", "done": 0, "device_share": 0.0},
    ]
    line = status.gpu_line(4, rows)
    assert line == (
        "4 GPU(s) running, 2 captioned in the last hour; least busy: i-0a/2 0 (0%), i-0a/1 30 (10%), i-0a/0 120 (50%)"
    )


@mock_aws
def test_the_fleet_counts_the_gpus_of_its_running_instances():
    ec2 = boto3.client("ec2", region_name="us-east-1")
    autoscaling = boto3.client("autoscaling", region_name="us-east-1")
    template = ec2.create_launch_template(
        LaunchTemplateName="t", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "g5.12xlarge"}
    )["LaunchTemplate"]
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="g",
        MinSize=2,
        MaxSize=2,
        DesiredCapacity=2,
        LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"]},
        AvailabilityZones=["us-east-1a"],
    )
    fleet = fleet_view.fleet(autoscaling, ec2, "g")
    assert fleet["running"] == [(("g5.12xlarge", "on-demand"), 2)] and fleet["gpus"] == 8
    assert (
        status.gpu_line(None, []) == "? GPU(s) running (a type not in stacks/instance_types.py), 0 captioned in "
        "the last hour"
    )


@mock_aws
def test_decode_graph_captures_that_failed_show_on_the_last_hour_line():
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    assert status.capture_note(fleet_view.activity(cloudwatch, "CaptionKit", "jobs", "group", {}, [], NOW)) == ""
    _put(cloudwatch, CAPTURE_FAILED, None, 1)
    _put(cloudwatch, CAPTURE_FAILED, None, 1)
    _put(cloudwatch, CAPTURE_FAILED, None, 1, queue="another-stack")
    activity = fleet_view.activity(cloudwatch, "CaptionKit", "jobs", "group", {}, [], NOW)
    assert activity["capture_failed_hour"] == 2
    assert status.capture_note(activity) == (
        "; 2 decode graph capture(s) failed: those models decode on the eager "
        "loop, slower (capture_failed in the agents' logs says why)"
    )
