"""Read a deployed CaptionKit stack's outputs, on AWS or local moto alike, and derive an agent config."""

from __future__ import annotations

import json
import os
from typing import Any

from runtime.errors import CaptionKitError
from tools.local_aws import aws_client

REQUIRED_OUTPUTS = (
    "ArtifactsBucket",
    "ImagesBucket",
    "ImagesPrefix",
    "ResultsBucket",
    "ResultsPrefix",
    "QueueUrl",
    "DeadLetterQueueUrl",
    "GroupName",
    "LogGroup",
    "AgentConfig",
)


class StackNotReady(CaptionKitError, RuntimeError):
    """The stack is missing, not in a completed state, or lacks outputs the tools need."""


def stack_outputs(stack_name: str, region: str, endpoint_url: str | None = None) -> dict[str, str]:
    """Return {OutputKey: OutputValue} of a completed stack (`endpoint_url` points at local moto)."""
    client = aws_client("cloudformation", region, endpoint_url)
    try:
        stack = client.describe_stacks(StackName=stack_name)["Stacks"][0]
    except client.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ValidationError":
            raise  # credentials, an endpoint that is not AWS: runtime.cli_errors words those
        where = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
        raise StackNotReady(
            f"no stack {stack_name} in {region} at {where}: deploy it first (`make local-up` for "
            "the local AWS, `make deploy` for AWS)"
        ) from None
    status = stack["StackStatus"]
    if not status.endswith("_COMPLETE") or status in ("ROLLBACK_COMPLETE", "DELETE_COMPLETE"):
        raise StackNotReady(
            f"stack {stack_name} is {status}, expected CREATE_COMPLETE or UPDATE_COMPLETE; "
            "wait for the deploy to finish, or read the stack's events to see what failed."
        )
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}
    missing = [key for key in REQUIRED_OUTPUTS if key not in outputs]
    if missing:
        raise StackNotReady(f"stack {stack_name} lacks outputs {missing}; redeploy it with this version of stacks/.")
    return outputs


def agent_config(outputs: dict[str, str], **overrides: Any) -> dict[str, Any]:
    """The agent config the workers run with (the AgentConfig output), with local overrides applied."""
    config = json.loads(outputs["AgentConfig"])
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise KeyError(f"unknown agent config key(s) {unknown}; known: {sorted(config)}")
    config.update(overrides)
    return config
