"""The worker role's permissions, spelled out action by action (no `*` actions, prefix-scoped objects)."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Aws, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.dataset_sources import DatasetSource
from stacks.dataset_sources import statements as dataset_statements
from stacks.storage import COMPILED_PREFIX, MODELS_PREFIX

METRICS_NAMESPACE = "CaptionKit"
SESSION_MANAGER_ACTIONS = [
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
]


class WorkerPolicy(Construct):
    """Attach to `role` exactly what a worker does; attribute `policy` (the one IAM policy made)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        role: iam.IRole,
        artifacts: s3.IBucket,
        images: s3.IBucket,
        images_prefix: str,
        results_prefix: str,
        queue: sqs.IQueue,
        dead_letters: sqs.IQueue,
        log_group: logs.ILogGroup,
        group_name: str,
        dataset_sources: tuple[DatasetSource, ...] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        group_arn = (
            f"arn:{Aws.PARTITION}:autoscaling:{Aws.REGION}:{Aws.ACCOUNT_ID}:autoScalingGroup:*"
            f":autoScalingGroupName/{group_name}"
        )
        own_instances = f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:instance/*"
        self.policy = iam.Policy(
            self,
            "Policy",
            roles=[role],
            statements=[
                _allow("ReadModels", ["s3:GetObject"], artifacts.arn_for_objects(f"{MODELS_PREFIX}*")),
                _allow(
                    "CompiledModelCache",
                    ["s3:GetObject", "s3:PutObject"],
                    artifacts.arn_for_objects(f"{COMPILED_PREFIX}*"),
                ),
                # ListBucket makes S3 answer 404 (not 403) for a missing key, so the agent can tell
                # "no cached compile" or "image deleted" from a permission problem. It reveals key names only.
                _allow("ListKeys", ["s3:ListBucket"], artifacts.bucket_arn, images.bucket_arn),
                _allow("ReadImages", ["s3:GetObject"], images.arn_for_objects(f"{images_prefix}*")),
                # results, and every job folder (manifest, parts, markers, runs, outputs) under the results prefix
                _allow("WriteResults", ["s3:GetObject", "s3:PutObject"], images.arn_for_objects(f"{results_prefix}*")),
                # SendMessage: the agent fans a job out into part messages on the same queue
                _allow(
                    "ConsumeJobs",
                    [
                        "sqs:ReceiveMessage",
                        "sqs:DeleteMessage",
                        "sqs:ChangeMessageVisibility",
                        "sqs:GetQueueAttributes",
                        "sqs:GetQueueUrl",
                        "sqs:SendMessage",
                    ],
                    queue.queue_arn,
                ),
                # a message no agent can parse is moved to the dead-letter queue at once
                _allow("DeadLetterUnknownMessages", ["sqs:GetQueueUrl", "sqs:SendMessage"], dead_letters.queue_arn),
                _allow(
                    "WriteLogs",
                    ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                    log_group.log_group_arn,
                ),
                _allow(
                    "DrainBeforeTermination",
                    ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
                    group_arn,
                ),
                # stacks/boot/give_up.sh: a worker that cannot serve marks itself Unhealthy, so the group replaces it
                _allow("ReplaceBrokenWorker", ["autoscaling:SetInstanceHealth"], group_arn),
                # ...after a back-off read from how many workers failed in the last hour
                _allow("CountFailedWorkers", ["cloudwatch:GetMetricStatistics"], "*"),
                iam.PolicyStatement(
                    sid="PutMetrics",
                    actions=["cloudwatch:PutMetricData"],
                    resources=["*"],
                    conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
                ),
                # the SSM agent's heartbeat names the instance itself; this account and region's instances only
                _allow("SessionManagerRegister", ["ssm:UpdateInstanceInformation"], own_instances),
                _allow("SessionManager", SESSION_MANAGER_ACTIONS, "*"),
                *map(iam.PolicyStatement.from_json, dataset_statements(dataset_sources, Aws.PARTITION)),
            ],
        )
        _acknowledge_wildcards(
            self.policy,
            artifacts=artifacts,
            images=images,
            images_prefix=images_prefix,
            results_prefix=results_prefix,
            group_arn=group_arn,
        )
        for source in dataset_sources:
            Validations.of(self.policy).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{source.bucket}/{source.prefix}*]",
                    reason="Read-only and scoped to a dataset source that the deployer named in the dataset_sources "
                    "setting: a dataset job reads whichever shards or manifest lie under it, unknown at deploy time.",
                )
            )


def _allow(sid: str, actions: list[str], *resources: str) -> iam.PolicyStatement:
    return iam.PolicyStatement(sid=sid, actions=actions, resources=list(resources))


def _acknowledge_wildcards(
    policy: iam.Policy,
    *,
    artifacts: s3.IBucket,
    images: s3.IBucket,
    images_prefix: str,
    results_prefix: str,
    group_arn: str,
) -> None:
    """Acknowledge each resource wildcard by its cdk-nag finding id, each with its own reason."""
    stack = Stack.of(policy)

    def objects(bucket: s3.IBucket, prefix: str) -> str:
        return "<{}.Arn>/{}*".format(stack.resolve(bucket.bucket_arn)["Fn::GetAtt"][0], prefix)

    group = (
        group_arn.replace(Aws.PARTITION, "<AWS::Partition>")
        .replace(Aws.REGION, "<AWS::Region>")
        .replace(Aws.ACCOUNT_ID, "<AWS::AccountId>")
    )
    reasons = {
        objects(artifacts, MODELS_PREFIX): "Read-only and scoped to the models/ prefix: a worker loads whichever "
        "model the pointer names, so the exact keys are unknown at deploy time.",
        objects(artifacts, COMPILED_PREFIX): "Scoped to the compiled-model cache prefix that the workers own; "
        "keys are per model checksum and GPU type.",
        objects(images, images_prefix): "Read-only and scoped to the input prefix: every uploaded image is a job.",
        objects(images, results_prefix): "Scoped to the results prefix: one result per input key, plus the "
        "folders of jobs (manifests, part files, markers), which the agents read back.",
        group: "Scoped to this one group by its name; the '*' stands for the group id that AWS assigns at creation.",
        "*": "cloudwatch:PutMetricData, cloudwatch:GetMetricStatistics and the ssmmessages actions support no "
        "resource-level permissions (Service Authorization Reference). PutMetricData is limited to the CaptionKit "
        "namespace by a condition; GetMetricStatistics reads metrics only (a failed worker's back-off); "
        "the ssmmessages actions are the documented minimum for Session Manager, which replaces SSH.",
        "arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*": "ssm:UpdateInstanceInformation is "
        "the SSM agent's heartbeat for the instance it runs on; instance ids are assigned at launch, so the "
        "resource is this account and region's instances.",
    }
    for resource, reason in reasons.items():
        Validations.of(policy).acknowledge(Acknowledgment(id=f"AwsSolutions-IAM5[Resource::{resource}]", reason=reason))
