"""Wake on the first image: bucket events to EventBridge, a rule on the input prefix, a function that may only wake."""

from aws_cdk.assertions import Match, Template
from test_stack_iam import identity_statements, render

from runtime.lambdas.wake_on_upload import wake
from stacks.synth import synthesize
from stacks.wake_on_upload import MIN_INTERVAL_S, _literal


def the(template, kind):
    [(logical_id, resource)] = template.find_resources(
        kind, {"Properties": {"Description": Match.string_like_regexp("wake|Wake|wakes")}}
    ).items()
    return logical_id, resource["Properties"]


def test_the_images_bucket_sends_its_events_to_eventbridge_besides_the_queue(template):
    template.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "NotificationConfiguration": Match.object_like(
                {"EventBridgeConfiguration": {}, "QueueConfigurations": Match.any_value()}
            )
        },
    )


def test_an_image_under_the_input_prefix_invokes_the_function(synthesized, template):
    settings = synthesized.stack.settings
    function_id, _ = the(template, "AWS::Lambda::Function")
    _, rule = the(template, "AWS::Events::Rule")
    pattern = rule["EventPattern"]
    assert (pattern["source"], pattern["detail-type"]) == (["aws.s3"], ["Object Created"])
    assert pattern["detail"]["bucket"]["name"] == [
        {"Ref": synthesized.stack.get_logical_id(synthesized.stack.storage.images.node.default_child)}
    ]
    assert pattern["detail"]["object"]["key"] == [{"wildcard": f"incoming/*{s}"} for s in settings.image_suffixes]
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {
            "Action": "lambda:InvokeFunction",
            "Principal": "events.amazonaws.com",
            "FunctionName": {"Fn::GetAtt": [function_id, "Arn"]},
        },
    )


def test_a_star_in_the_prefix_is_matched_literally():
    assert _literal("in*coming/") == "in\\*coming/"


def test_the_function_is_rate_limited_and_names_the_workers_group(template):
    function_id, function = the(template, "AWS::Lambda::Function")
    assert function["Handler"] == "wake.handler" and function["Runtime"].startswith("python3.")
    assert function["ReservedConcurrentExecutions"] == 1
    assert function["Environment"]["Variables"] == {
        wake.GROUP_ENV: "CaptionKit-workers",
        wake.INTERVAL_ENV: str(MIN_INTERVAL_S),
    }
    template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {"FunctionName": {"Ref": function_id}, "MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60},
    )


def test_the_function_code_is_the_one_wake_module_alone(synthesized):
    assets = [p for p in synthesized.assembly_dir.iterdir() if p.name.startswith("asset.")]
    code = [p for p in assets if (p / "wake.py").exists()]
    assert [sorted(f.name for f in p.rglob("*") if f.is_file()) for p in code] == [["wake.py"]]


def test_the_function_may_set_only_the_workers_group_and_read_group_sizes(synthesized, template):
    _, function = the(template, "AWS::Lambda::Function")
    role_id = function["Role"]["Fn::GetAtt"][0]
    statements = [
        s
        for logical_id, s in identity_statements(synthesized.template)
        if {"Ref": role_id} in synthesized.template["Resources"][logical_id]["Properties"].get("Roles", [])
    ]
    by_sid = {s["Sid"]: (s["Action"], render(s["Resource"])) for s in statements}
    assert by_sid == {
        "WakeTheWorkers": (
            "autoscaling:SetDesiredCapacity",
            "arn:<AWS::Partition>:autoscaling:<AWS::Region>:"
            "<AWS::AccountId>:autoScalingGroup:*:autoScalingGroupName/CaptionKit-workers",
        ),
        "ReadTheGroup": ("autoscaling:DescribeAutoScalingGroups", "*"),
        "WriteLogs": (["logs:CreateLogStream", "logs:PutLogEvents"], by_sid["WriteLogs"][1]),
        "KeepFailedWakes": ("sqs:SendMessage", by_sid["KeepFailedWakes"][1]),
    }
    assert by_sid["KeepFailedWakes"][1].startswith("<WakeFailures")
    assert by_sid["WriteLogs"][1].startswith("<WakeLogs")
    role = synthesized.template["Resources"][role_id]["Properties"]
    assert "ManagedPolicyArns" not in role
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}


def test_wake_on_upload_false_leaves_no_function_and_no_rule():
    template = Template.from_json(synthesize((("wake_on_upload", "false"),)).template)
    template.resource_count_is("AWS::Events::Rule", 0)
    assert not template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": "wake.handler"}})


def test_one_invocation_at_a_time_and_failed_or_expired_events_go_to_an_encrypted_dead_letter_queue(
    synthesized, template
):
    stack = synthesized.stack
    queue_id = stack.get_logical_id(stack.wake.failures.node.default_child)
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "wake.handler",
            "ReservedConcurrentExecutions": 1,
            "DeadLetterConfig": {"TargetArn": {"Fn::GetAtt": [queue_id, "Arn"]}},
        },
    )
    assert synthesized.template["Resources"][queue_id]["Properties"] == {
        "SqsManagedSseEnabled": True,
        "MessageRetentionPeriod": 14 * 86400,
    }
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": queue_id}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            },
        },
    )
