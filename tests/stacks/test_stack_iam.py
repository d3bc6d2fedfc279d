"""Least privilege: no `*` actions, object wildcards only under a prefix, exactly what a worker does."""

import pytest

NO_RESOURCE_LEVEL_ACTIONS = {
    "cloudwatch:PutMetricData",
    "cloudwatch:GetMetricStatistics",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
}
OWN_INSTANCES = "arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*"


def render(value):
    """A template value as text: Ref X -> <X>, GetAtt X.Arn -> <X.Arn>, joins concatenated."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    if "Fn::Join" in value:
        return value["Fn::Join"][0].join(render(part) for part in value["Fn::Join"][1])
    if "Fn::Sub" in value:
        return value["Fn::Sub"]
    raise AssertionError(f"unexpected intrinsic {value}")


def as_list(value):
    return value if isinstance(value, list) else [value]


def identity_statements(template):
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::Policy":
            yield from ((logical_id, s) for s in resource["Properties"]["PolicyDocument"]["Statement"])
        if resource["Type"] == "AWS::IAM::Role":
            for policy in resource["Properties"].get("Policies", []):
                yield from ((logical_id, s) for s in policy["PolicyDocument"]["Statement"])


def worker_role_id(synthesized):
    return synthesized.stack.get_logical_id(synthesized.stack.fleet.role.node.default_child)


def worker_statements(synthesized):
    """Every statement of every policy attached to the worker role, by Sid (each must have one)."""
    role = {"Ref": worker_role_id(synthesized)}
    policies = [
        r["Properties"]
        for r in synthesized.template["Resources"].values()
        if r["Type"] == "AWS::IAM::Policy" and role in r["Properties"]["Roles"]
    ]
    statements = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    by_sid = {s["Sid"]: s for s in statements}
    assert len(by_sid) == len(statements)
    return by_sid


def test_no_identity_policy_grants_a_wildcard_action(synthesized):
    for logical_id, statement in identity_statements(synthesized.template):
        assert not any("*" in action for action in as_list(statement["Action"])), (logical_id, statement)


def test_worker_resource_wildcards_are_prefix_scoped_or_unavoidable(synthesized):
    for sid, statement in worker_statements(synthesized).items():
        for resource in map(render, as_list(statement["Resource"])):
            if resource == "*":
                assert set(as_list(statement["Action"])) <= NO_RESOURCE_LEVEL_ACTIONS, sid
            elif "*" in resource:
                scoped = resource.endswith("/*") and resource.count("*") == 1 and resource.count("/") >= 2
                one_group = ":autoScalingGroup:*:autoScalingGroupName/CaptionKit-workers" in resource
                own_instances = resource == OWN_INSTANCES
                assert scoped or one_group or own_instances, (sid, resource)


def test_worker_may_do_exactly_its_job(synthesized):
    stack = synthesized.stack
    artifacts, images, jobs, dead_letters = (
        render(stack.resolve(arn))
        for arn in (
            stack.storage.artifacts.bucket_arn,
            stack.storage.images.bucket_arn,
            stack.jobs.queue.queue_arn,
            stack.jobs.dead_letters.queue_arn,
        )
    )
    expected = {
        "ReadModels": (["s3:GetObject"], [f"{artifacts}/models/*"]),
        "CompiledModelCache": (["s3:GetObject", "s3:PutObject"], [f"{artifacts}/compiled/*"]),
        "ListKeys": (["s3:ListBucket"], [artifacts, images]),
        "ReadImages": (["s3:GetObject"], [f"{images}/incoming/*"]),
        "WriteResults": (["s3:GetObject", "s3:PutObject"], [f"{images}/results/*"]),
        "ConsumeJobs": (
            sorted(
                [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                    "sqs:SendMessage",
                ]
            ),
            [jobs],
        ),
        "DeadLetterUnknownMessages": (["sqs:GetQueueUrl", "sqs:SendMessage"], [dead_letters]),
        "WriteLogs": (["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"], None),
        "DrainBeforeTermination": (
            ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
            None,
        ),
        "ReplaceBrokenWorker": (["autoscaling:SetInstanceHealth"], None),
        "CountFailedWorkers": (["cloudwatch:GetMetricStatistics"], ["*"]),
        "PutMetrics": (["cloudwatch:PutMetricData"], ["*"]),
        "SessionManager": (
            sorted(NO_RESOURCE_LEVEL_ACTIONS - {"cloudwatch:PutMetricData", "cloudwatch:GetMetricStatistics"}),
            ["*"],
        ),
        "SessionManagerRegister": (["ssm:UpdateInstanceInformation"], [OWN_INSTANCES]),
        "ReadRuntimeBundle": (["s3:GetObject"], None),
        "PublishJobDone": (["sns:Publish"], [render(stack.resolve(stack.job_notifications.topic.topic_arn))]),
        "EncryptJobDone": (["kms:Decrypt", "kms:GenerateDataKey"], [render(stack.resolve(stack.key.key_arn))]),
    }
    statements = worker_statements(synthesized)
    assert set(statements) == set(expected)
    for sid, (actions, resources) in expected.items():
        assert sorted(as_list(statements[sid]["Action"])) == actions, sid
        assert statements[sid]["Effect"] == "Allow" and "NotAction" not in statements[sid]
        if resources is not None:
            assert sorted(map(render, as_list(statements[sid]["Resource"]))) == sorted(resources), sid


def test_the_topic_key_is_usable_only_through_sns(synthesized):
    condition = worker_statements(synthesized)["EncryptJobDone"]["Condition"]
    assert condition == {"StringEquals": {"kms:ViaService": "sns.us-east-1.amazonaws.com"}}


def test_metrics_are_limited_to_the_captionkit_namespace(synthesized):
    condition = worker_statements(synthesized)["PutMetrics"]["Condition"]
    assert condition == {"StringEquals": {"cloudwatch:namespace": "CaptionKit"}}


@pytest.mark.parametrize("sid", ["DrainBeforeTermination", "ReplaceBrokenWorker"])
def test_lifecycle_and_health_actions_are_limited_to_the_workers_own_group(synthesized, sid):
    [resource] = as_list(worker_statements(synthesized)[sid]["Resource"])
    assert render(resource).endswith(":autoScalingGroup:*:autoScalingGroupName/CaptionKit-workers")


def test_runtime_bundle_read_is_limited_to_its_one_object(synthesized):
    [resource] = as_list(worker_statements(synthesized)["ReadRuntimeBundle"]["Resource"])
    assert "*" not in render(resource) and render(resource).endswith(".zip")


def test_worker_role_is_for_ec2_only_and_has_no_managed_policies(synthesized):
    role = synthesized.template["Resources"][worker_role_id(synthesized)]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}}
    ]
    assert "ManagedPolicyArns" not in role
