"""The stack's operating parts: the job-completion topic and who may publish to it, the dashboard and its URL."""

from __future__ import annotations

import json

from aws_cdk import Stack
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template

from runtime.agent.metrics import DEVICE_TIME, IMAGE_ERRORS, IMAGE_LATENCY, IMAGES_DONE
from stacks.dashboard import Dashboard
from stacks.notify import JobNotifications


def test_job_topic_is_ssl_only_and_mails_only_when_asked():
    stack = Stack()
    key = kms.Key(stack, "Key")
    JobNotifications(stack, "Quiet", email=None, key=key)
    JobNotifications(stack, "Mail", email="ops@example.com", key=key)
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::SNS::Topic", 2)
    template.resource_count_is("AWS::SNS::Subscription", 1)
    template.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"})
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            }
        },
    )


def test_only_the_worker_role_may_publish_and_only_to_the_job_topic(synthesized):
    stack, template = synthesized.stack, synthesized.template
    topic = stack.resolve(stack.job_notifications.topic.topic_arn)
    publishers = [
        (rid, s)
        for rid, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Policy"
        for s in r["Properties"]["PolicyDocument"]["Statement"]
        if "sns:Publish" in json.dumps(s["Action"])
    ]
    assert [(s["Action"], s["Resource"]) for _, s in publishers] == [("sns:Publish", topic)]
    [(policy_id, _)] = publishers
    role = {"Ref": stack.get_logical_id(stack.fleet.role.node.default_child)}
    assert template["Resources"][policy_id]["Properties"]["Roles"] == [role]


def test_the_agent_config_and_the_outputs_name_the_job_topic_and_the_dashboard(synthesized):
    stack = synthesized.stack
    assert stack.fleet.agent_config["job_topic_arn"] == stack.job_notifications.topic.topic_arn
    outputs = synthesized.template["Outputs"]
    assert outputs["JobTopicArn"]["Value"] == stack.resolve(stack.job_notifications.topic.topic_arn)
    assert outputs["DashboardUrl"]["Value"] == (
        "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#dashboards:name=CaptionKit-fleet"
    )


def test_dashboard_graphs_backlog_fleet_throughput_latency_device_time_and_errors():
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
    assert dashboard["Properties"]["DashboardName"] == "X-fleet"
    body = json.dumps(stack.resolve(dashboard["Properties"]["DashboardBody"]))
    for title in (
        "Backlog",
        "Fleet size",
        "Images per minute",
        "Latency",
        "Device time per image",
        "Errors and dead letters",
    ):
        assert title in body, title
    for metric in (
        IMAGES_DONE,
        IMAGE_ERRORS,
        IMAGE_LATENCY,
        DEVICE_TIME,
        "GroupInServiceInstances",
        "GroupDesiredCapacity",
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
    ):
        assert f'\\"{metric}\\"' in body, metric
    for stat in ("p50", "p90", "p99"):
        assert f'\\"stat\\":\\"{stat}\\"' in body, stat
