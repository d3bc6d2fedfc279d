"""The jobs queue, its dead-letter queue, and the S3 events on the input prefix that feed it."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Stack, Validations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.acknowledge import SSE_SQS_FALSE_POSITIVE, skip_checkov

MESSAGE_RETENTION = Duration.days(14)
LAMBDA_BASIC_EXECUTION = "arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


class JobQueue(Construct):
    """An encrypted, SSL-only queue with a dead-letter queue; attributes `queue` and `dead_letters`."""

    def __init__(
        self, scope: Construct, construct_id: str, *, visibility_timeout_s: int, max_receive_count: int
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=MESSAGE_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Jobs",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(visibility_timeout_s),
            retention_period=MESSAGE_RETENTION,
            receive_message_wait_time=Duration.seconds(20),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letters, max_receive_count=max_receive_count),
        )
        for queue in (self.queue, self.dead_letters):
            skip_checkov(queue, {"CKV_AWS_27": SSE_SQS_FALSE_POSITIVE})

    def subscribe_to_uploads(self, bucket: s3.IBucket, *, prefix: str, suffixes: tuple[str, ...]) -> None:
        """Send an event for every object created under `prefix` whose key ends in one of `suffixes`."""
        destination = s3n.SqsDestination(self.queue)
        for suffix in suffixes:
            bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED,
                destination,
                s3.NotificationKeyFilter(prefix=prefix, suffix=suffix),
            )
        _acknowledge_notifications_handler(Stack.of(self))


_CDK_HANDLER = "CDK's own bucket-notification handler (one per stack, code and properties set by aws-cdk-lib), "
NOTIFICATIONS_HANDLER_SKIPS = {
    "CKV_AWS_115": _CDK_HANDLER + "invoked only by CloudFormation, once per deploy that changes the bucket "
    "notifications: a reservation would only take capacity from the account's unreserved pool.",
    "CKV_AWS_116": _CDK_HANDLER + "a CloudFormation custom resource: an invocation that fails never answers its "
    "request, so the deploy fails and rolls back; nothing is lost silently, and a dead-letter queue would have "
    "no reader.",
    "CKV_AWS_117": _CDK_HANDLER + "it calls only the S3 API during deploys and holds no data; the VPC has no NAT "
    "gateway, so inside it the call would need one.",
}


def _acknowledge_notifications_handler(stack: Stack) -> None:
    for child in stack.node.children:
        if child.node.id.startswith("BucketNotificationsHandler"):
            Validations.of(child).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions-IAM4[Policy::{LAMBDA_BASIC_EXECUTION}]",
                    reason="CDK's own bucket-notification handler, a Lambda run only during deploys to call "
                    "PutBucketNotificationConfiguration; this AWS managed policy only lets it write its own logs.",
                )
            )
            skip_checkov(child, NOTIFICATIONS_HANDLER_SKIPS)
