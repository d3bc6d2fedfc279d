"""The stack's KMS key: both topics and both log groups use it, and only alarms and Logs may use it as services."""

from aws_cdk import Environment, Stack
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template

from stacks.alarms import Alarms
from stacks.encryption import StackKey


def key_ref(synthesized):
    return {"Fn::GetAtt": [synthesized.stack.get_logical_id(synthesized.stack.key.node.default_child), "Arn"]}


def test_both_topics_are_encrypted_with_the_stack_key(synthesized, template):
    for name in ("CaptionKit alarms", "CaptionKit jobs done"):
        template.has_resource_properties(
            "AWS::SNS::Topic", {"DisplayName": name, "KmsMasterKeyId": key_ref(synthesized)}
        )


def test_both_log_groups_are_encrypted_with_the_stack_key(synthesized, template):
    groups = template.find_resources("AWS::Logs::LogGroup")
    assert len(groups) == 2
    assert all(g["Properties"]["KmsKeyId"] == key_ref(synthesized) for g in groups.values())


def test_the_key_rotates_and_lets_only_this_accounts_alarms_and_log_groups_use_it():
    stack = Stack(env=Environment(region="eu-west-1"))
    StackKey(stack, "Encryption")
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Sid": "AlarmsPublishToEncryptedTopics",
                                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                                "Condition": {
                                    "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                                    "ArnLike": {"aws:SourceArn": Match.any_value()},
                                },
                            }
                        ),
                        Match.object_like(
                            {
                                "Sid": "LogsEncryptLogGroups",
                                "Principal": {"Service": "logs.eu-west-1.amazonaws.com"},
                                "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": Match.any_value()}},
                            }
                        ),
                    ]
                )
            },
        },
    )
    template.has_resource(
        "AWS::KMS::Key", {"DeletionPolicy": "Delete", "Properties": Match.object_like({"PendingWindowInDays": 7})}
    )


def test_the_alarm_topic_is_encrypted_with_the_key_it_is_given():
    stack = Stack()
    key = StackKey(stack, "Encryption").key
    queue = sqs.Queue(stack, "Q")
    Alarms(
        stack,
        "Alarms",
        queue=queue,
        dead_letters=queue,
        group_name="G",
        metrics_namespace="N",
        max_message_age_s=60,
        stalled_minutes=5,
        alarm_email=None,
        key=key,
    )
    Template.from_stack(stack).has_resource_properties(
        "AWS::SNS::Topic",
        {
            "DisplayName": "CaptionKit alarms",
            "KmsMasterKeyId": {"Fn::GetAtt": [Match.string_like_regexp("^Encryption"), "Arn"]},
        },
    )
