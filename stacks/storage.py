"""The buckets: artifacts (models, compiled cache), images (input and results) and their access logs."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from runtime.registry import MODELS_PREFIX
from stacks.acknowledge import skip_checkov

COMPILED_PREFIX = "compiled/"
_ABORT_INCOMPLETE_UPLOADS = s3.LifecycleRule(
    id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(7)
)


class Storage(Construct):
    """Private, encrypted, SSL-only buckets that survive `cdk destroy` (they hold the data).

    Attributes: `artifacts` (models/ and compiled/), `images` (input prefix and results prefix in one
    bucket, so one policy covers both and S3 events filter on the input prefix only) and `access_logs`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, model_version_retention_days: int) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            **_private(),
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(365))],
        )
        self.artifacts = s3.Bucket(
            self,
            "Artifacts",
            **_private(),
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="artifacts/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-replaced-model-versions",
                    prefix=MODELS_PREFIX,
                    noncurrent_version_expiration=Duration.days(model_version_retention_days),
                ),
                s3.LifecycleRule(
                    id="expire-replaced-compiled-versions",
                    prefix=COMPILED_PREFIX,
                    noncurrent_version_expiration=Duration.days(1),
                ),
                _ABORT_INCOMPLETE_UPLOADS,
            ],
        )
        self.images = s3.Bucket(
            self,
            "Images",
            **_private(),
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="images/",
            lifecycle_rules=[_ABORT_INCOMPLETE_UPLOADS],
        )
        skip_checkov(
            self.access_logs,
            {
                "CKV_AWS_18": "This is the access-log bucket itself: logging it into itself would log its own log "
                "deliveries without end, and into another bucket would need a third bucket to do the same.",
                "CKV_AWS_21": "S3 server access logs and VPC flow logs are written once under new keys and never "
                "overwritten; versioning would only keep expired logs as noncurrent versions. Retained on destroy.",
            },
        )
        skip_checkov(
            self.images,
            {
                "CKV_AWS_21": "Inputs are copies the user uploads and results are derived and rewritten idempotently "
                "(redelivery overwrites with the same content); versioning would keep a copy of every rewrite, and "
                "S3 events would then carry version ids that the workers' role (s3:GetObject, no GetObjectVersion) "
                "cannot read. The bucket is retained on destroy; a re-run (make submit) rebuilds any lost result.",
            },
        )


def _private() -> dict:
    return dict(
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        removal_policy=RemovalPolicy.RETAIN,
    )
