"""The local-only step after `cdk deploy` to moto: what moto's CloudFormation ignores but the flow needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools.local_aws import aws_client

NOTIFICATIONS_TYPE = "Custom::S3BucketNotifications"


def synthesized_stack(cloud_assembly: Path) -> tuple[str, dict[str, Any]]:
    """(stack name, template) of the one stack in a cloud assembly directory (cdk.out)."""
    manifest = json.loads((cloud_assembly / "manifest.json").read_text())
    stacks = {k: a for k, a in manifest["artifacts"].items() if a["type"] == "aws:cloudformation:stack"}
    if len(stacks) != 1:
        raise ValueError(f"expected one stack in {cloud_assembly}, found {sorted(stacks)}")
    artifact_id, artifact = stacks.popitem()
    template = json.loads((cloud_assembly / artifact["properties"]["templateFile"]).read_text())
    return artifact["properties"].get("stackName", artifact_id), template


def custom_resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every Custom:: resource of `template` by logical id."""
    return {rid: r for rid, r in template["Resources"].items() if r["Type"].startswith("Custom::")}


def apply_what_moto_ignores(template: dict[str, Any], stack_name: str, *, region: str, endpoint_url: str) -> None:
    """Apply the template's bucket notifications, then make moto evaluate the stack's outputs."""
    apply_bucket_notifications(template, stack_name, region=region, endpoint_url=endpoint_url)
    # moto evaluates Outputs only when a stack is created or updated directly, never from a change set
    # (what `cdk deploy` uses); an update with the same template fills them in and changes nothing else.
    aws_client("cloudformation", region, endpoint_url).update_stack(StackName=stack_name, UsePreviousTemplate=True)


def apply_bucket_notifications(
    template: dict[str, Any], stack_name: str, *, region: str, endpoint_url: str
) -> list[str]:
    """Do what CDK's notification handler Lambda does on AWS (moto creates it but cannot run it).

    Returns the names of the buckets configured.
    """
    cloudformation = aws_client("cloudformation", region, endpoint_url)
    resources = cloudformation.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    physical = {r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in resources}
    types = {r["LogicalResourceId"]: r["ResourceType"] for r in resources}
    s3 = aws_client("s3", region, endpoint_url)
    configured = []
    for logical_id, resource in custom_resources(template).items():
        if resource["Type"] != NOTIFICATIONS_TYPE:
            raise NotImplementedError(
                f"{logical_id} is a {resource['Type']}, which moto cannot run and this local "
                "step does not emulate; add its emulation to tools/moto_gaps.py"
            )
        properties = {
            key: _resolve(resource["Properties"][key], physical, types, region=region, endpoint_url=endpoint_url)
            for key in ("BucketName", "NotificationConfiguration")
        }
        s3.put_bucket_notification_configuration(
            Bucket=properties["BucketName"], NotificationConfiguration=properties["NotificationConfiguration"]
        )
        configured.append(properties["BucketName"])
    return configured


def _resolve(value: Any, physical: dict[str, str], types: dict[str, str], **aws: str) -> Any:
    """Resolve the intrinsics this resource uses: Ref (a physical id) and Fn::GetAtt X.Arn (of a queue)."""
    if isinstance(value, list):
        return [_resolve(v, physical, types, **aws) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return physical[value["Ref"]]
    if set(value) == {"Fn::GetAtt"}:
        logical_id, attribute = value["Fn::GetAtt"]
        if types.get(logical_id) == "AWS::SQS::Queue" and attribute == "Arn":
            sqs = aws_client("sqs", aws["region"], aws["endpoint_url"])
            return sqs.get_queue_attributes(QueueUrl=physical[logical_id], AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
        raise NotImplementedError(f"cannot resolve Fn::GetAtt {logical_id}.{attribute} locally")
    return {k: _resolve(v, physical, types, **aws) for k, v in value.items()}


# What the real path has and moto does not, with no local emulation: the code reads them the same way on both,
# locally they are empty unless a test puts them in (README "Operating the fleet").
NOT_EMULATED = {
    "embedded-metric extraction": "CloudWatch Logs turns the agent's `_aws` log lines into ImagesDone, ImageErrors, "
    "DeviceTime, ImageLatency...; moto extracts no metrics from log events",
    "group metrics": "AWS/AutoScaling GroupTotalInstances and friends (enabled on the group); moto emits none",
    "log shipping": "the CloudWatch agent ships the worker's log files to the log group only on the instance",
    "e-mail subscriptions": "an SNS e-mail subscription is never confirmed or delivered; SNS to SQS is",
}

# Not emulated, worked around where it is used: SQS message move tasks (StartMessageMoveTask answers 500 on
# moto 5.2.5). `make redrive` on the local AWS moves dead-lettered messages by receive/send/delete instead
# (tools/redrive.py).
