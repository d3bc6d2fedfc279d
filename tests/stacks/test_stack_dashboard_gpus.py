"""The dashboard's per-GPU row: one line per GPU of the fleet, found by the agents' Gpu dimension."""

import json

from aws_cdk import Stack
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Template

from runtime.agent.metrics import DEVICE_TIME, GPU_DIMENSION, IMAGES_DONE
from stacks.dashboard import Dashboard


def test_the_dashboard_graphs_images_and_device_time_per_gpu_of_this_queue():
    stack = Stack()
    queue, dead = sqs.Queue(stack, "Q"), sqs.Queue(stack, "D")
    Dashboard(
        stack,
        "Dash",
        name="X-fleet",
        queue=queue,
        dead_letters=dead,
        group_name="X-workers",
        metrics_namespace="CaptionKit",
    )
    [dashboard] = Template.from_stack(stack).find_resources("AWS::CloudWatch::Dashboard").values()
    parts = stack.resolve(dashboard["Properties"]["DashboardBody"])["Fn::Join"][1]
    body = json.loads("".join(p if isinstance(p, str) else "<queue name>" for p in parts))
    widgets = {w["properties"]["title"]: w["properties"]["metrics"] for w in body["widgets"]}
    for title, metric in (
        ("Images per minute, per GPU", IMAGES_DONE),
        ("Device ms per minute, per GPU (60,000: busy all minute)", DEVICE_TIME),
    ):
        [[options]] = widgets[title]
        assert options["expression"] == (
            f"SEARCH('{{CaptionKit,{GPU_DIMENSION},Queue}} MetricName=\"{metric}\" Queue=\"<queue name>\"', 'Sum', 60)"
        )
