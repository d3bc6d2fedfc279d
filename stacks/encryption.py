"""The stack's own KMS key: it encrypts the alarm and job topics and the log groups."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

PENDING_DELETION = Duration.days(7)  # what it protects is transient (notifications) or destroyed with it (logs)


class StackKey(Construct):
    """Attribute `key`: a rotating customer-managed key that CloudWatch alarms and Logs may use in this account."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        region = Stack.of(self).region
        alarms = f"arn:{Aws.PARTITION}:cloudwatch:{region}:{Aws.ACCOUNT_ID}:alarm:*"
        log_groups = f"arn:{Aws.PARTITION}:logs:{region}:{Aws.ACCOUNT_ID}:log-group:*"
        self.key = kms.Key(
            self,
            "Key",
            description="CaptionKit: encrypts the alarm and job topics and the log groups",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=PENDING_DELETION,
        )
        # The AWS managed alias/aws/sns key grants no service principal and its policy cannot be edited, so CloudWatch
        # alarms cannot publish to a topic it encrypts; a customer-managed key must grant them Decrypt and
        # GenerateDataKey* (https://repost.aws/knowledge-center/cloudwatch-configure-alarm-sns,
        # https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services).
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlarmsPublishToEncryptedTopics",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    "ArnLike": {"aws:SourceArn": alarms},
                },
            )
        )
        # CloudWatch Logs, not the writers, uses the key, and needs these grants before a log group can name it
        # (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html).
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="LogsEncryptLogGroups",
                principals=[iam.ServicePrincipal(f"logs.{region}.amazonaws.com")],
                actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                resources=["*"],
                conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups}},
            )
        )
