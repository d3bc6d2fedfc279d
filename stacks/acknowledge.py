"""Checkov acknowledgements: a skipped check and its reason, written into the resource's template metadata."""

from __future__ import annotations

from aws_cdk import CfnResource
from constructs import IConstruct

SSE_SQS_FALSE_POSITIVE = (
    "Encrypted at rest with SSE-SQS (SqsManagedSseEnabled: true); checkov 3's CKV_AWS_27 reads "
    "only KmsMasterKeyId, so it reports SQS-managed encryption as none."
)


def skip_checkov(construct: IConstruct, reasons: dict[str, str]) -> None:
    """Add `{check id: reason}` to the `checkov: skip` metadata of `construct` (or its default child)."""
    resource = construct if isinstance(construct, CfnResource) else construct.node.default_child
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource to carry a checkov skip")
    skips = {skip["id"]: skip["comment"] for skip in (resource.get_metadata("checkov") or {}).get("skip", [])}
    skips.update(reasons)
    resource.add_metadata("checkov", {"skip": [{"id": check, "comment": reason} for check, reason in skips.items()]})
