"""Wake on the first image: the images bucket's EventBridge events drive a function that sets the group to 1 from 0.

Why EventBridge and not the queue: a Lambda consuming the jobs queue would take the workers' messages, and S3
refuses a second notification destination with the same prefix and suffix as the queue's
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-how-to-filtering.html). EventBridge delivery
is a bucket switch, and events from AWS services cost nothing (https://aws.amazon.com/eventbridge/pricing/), so
the idle cost is zero: no invocation without an upload. A busy upload pays one short Lambda invocation per image
(about $0.20 per million requests plus 128 MB for a few ms each, https://aws.amazon.com/lambda/pricing/).
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Acknowledgment, Aws, Duration, RemovalPolicy, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from runtime.lambdas.wake_on_upload import wake as wake_code
from stacks.acknowledge import SSE_SQS_FALSE_POSITIVE, skip_checkov

CODE = Path(wake_code.__file__)  # the function's whole code: one file, boto3 only, alone in its folder

MIN_INTERVAL_S = 60  # one look at the group per minute per warm function instance
RUNTIME = lambda_.Runtime.PYTHON_3_14  # the latest the pinned aws-cdk-lib knows (cdk-nag L1)
FAILED_WAKE_RETENTION = Duration.days(14)


class WakeOnUpload(Construct):
    """Attributes: `function` (code: the folder runtime/lambdas/wake_on_upload/), `rule` (Object Created under the
    prefix), `role`, and `failures` (the function's dead-letter queue: events that failed or expired, kept for
    diagnosis).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.Bucket,
        prefix: str,
        suffixes: tuple[str, ...],
        group_name: str,
        log_retention_days: int,
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        bucket.enable_event_bridge_notification()
        log_group = logs.LogGroup(self, "Logs", removal_policy=RemovalPolicy.DESTROY, encryption_key=log_key)
        log_group.node.default_child.retention_in_days = log_retention_days
        group_arn = (
            f"arn:{Aws.PARTITION}:autoscaling:{Aws.REGION}:{Aws.ACCOUNT_ID}:autoScalingGroup:*"
            f":autoScalingGroupName/{group_name}"
        )
        self.failures = sqs.Queue(
            self,
            "Failures",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=FAILED_WAKE_RETENTION,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="CaptionKit wake-up: read the workers group, set it to 1 from 0, write logs, "
            "keep failed events",
        )
        for sid, actions, resource in (
            ("WakeTheWorkers", ["autoscaling:SetDesiredCapacity"], group_arn),
            # Describe* supports no resource-level permissions (Service Authorization Reference, EC2 Auto Scaling)
            ("ReadTheGroup", ["autoscaling:DescribeAutoScalingGroups"], "*"),
            ("WriteLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], log_group.log_group_arn),
            ("KeepFailedWakes", ["sqs:SendMessage"], self.failures.queue_arn),
        ):
            self.role.add_to_policy(iam.PolicyStatement(sid=sid, actions=actions, resources=[resource]))
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            handler=f"{CODE.stem}.handler",
            # the folder holds wake.py alone; Python's own bytecode cache, written there whenever `submit` (which
            # imports wake_quietly) runs on this checkout, is not code we ship and would change the asset's hash
            code=lambda_.Code.from_asset(str(CODE.parent), exclude=["__pycache__", "*.pyc"]),
            role=self.role,
            log_group=log_group,
            memory_size=128,
            timeout=Duration.seconds(10),
            # one invocation at a time: with the in-function minute between looks, a burst of uploads makes at
            # most a few Auto Scaling calls; events that wait longer than a minute go to `failures` (one is enough)
            reserved_concurrent_executions=1,
            environment={wake_code.GROUP_ENV: group_name, wake_code.INTERVAL_ENV: str(MIN_INTERVAL_S)},
            description="Set the CaptionKit workers' desired capacity to 1 when it is 0 (first upload wakes the fleet)",
        )
        self.function.configure_async_invoke(retry_attempts=0, max_event_age=Duration.seconds(60))
        # set on the L1: the L2's dead_letter_queue would grant the role an unnamed copy of KeepFailedWakes
        self.function.node.default_child.dead_letter_config = lambda_.CfnFunction.DeadLetterConfigProperty(
            target_arn=self.failures.queue_arn
        )
        self.rule = events.Rule(
            self,
            "Uploads",
            description="An image under the input prefix wakes the workers",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [bucket.bucket_name]},
                    "object": {"key": [{"wildcard": f"{_literal(prefix)}*{_literal(suffix)}"} for suffix in suffixes]},
                },
            ),
        )
        self.rule.add_target(targets.LambdaFunction(self.function, retry_attempts=2, max_event_age=Duration.minutes(5)))
        Validations.of(self.role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="autoscaling:DescribeAutoScalingGroups supports no resource-level permissions (Service "
                "Authorization Reference); it reads group sizes only. The one write, SetDesiredCapacity, is "
                "scoped to the workers group by name.",
            ),
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:autoscaling:<AWS::Region>:<AWS::AccountId>:"
                f"autoScalingGroup:*:autoScalingGroupName/{group_name}]",
                reason="Scoped to this one group by its name; the '*' stands for the group id that AWS assigns.",
            ),
        )
        skip_checkov(
            self.function,
            {
                "CKV_AWS_117": "Not in the VPC on purpose: the function calls only the Auto Scaling API and touches no "
                "data; the workers' VPC has no NAT gateway (a fixed cost at zero scale), so inside it the call would "
                "need a NAT or an autoscaling interface endpoint, paid for every hour to save nothing.",
                "CKV_AWS_173": "Lambda encrypts environment variables at rest with its AWS managed key; these two are "
                "the workers' group name and an interval in seconds, no secrets, so a customer key would only add a "
                "grant.",
            },
        )
        skip_checkov(self.failures, {"CKV_AWS_27": SSE_SQS_FALSE_POSITIVE})


def _literal(text: str) -> str:
    """`text` as a literal inside an EventBridge wildcard pattern (a '*' in a key prefix is no wildcard)."""
    return text.replace("\\", "\\\\").replace("*", "\\*")
