"""cfn-lint on every synthesized template variant: no errors, no warnings except CDK's own redundant DependsOn."""

import json

import pytest
from cfnlint.api import ManualArgs, lint

from stacks.synth import synthesize

VARIANTS = {
    "defaults": (),
    "spot-email-ami-id": (
        ("spot", "true"),
        ("instance_types", "g5.xlarge,g6.xlarge"),
        ("alarm_email", "ops@example.com"),
        ("ami", "ami-0123456789abcdef0"),
    ),
    "warm-pool": (("warm_pool", "true"),),
    "dataset-sources": (("dataset_sources", "s3://laion-shards/train/,s3://coco-parquet/,s3://laion-shards/val/"),),
}
# CDK's bucket-notification plumbing declares DependsOn next to a GetAtt of the same resource (W3005:
# redundant, harmless), and so does a Lambda function on the role it is given (the wake-up function). It is
# CDK-generated; anything else cfn-lint reports fails the test.
CDK_GENERATED = ("BucketNotificationsHandler", "Notifications", "WakeFunction")


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_template_is_cfn_lint_clean(overrides):
    template = synthesize(overrides).template
    findings = lint(json.dumps(template), config=ManualArgs(regions=[template_region(overrides)]))
    unexpected = [
        str(f) for f in findings if not (f.rule.id == "W3005" and any(part in str(f.path) for part in CDK_GENERATED))
    ]
    assert unexpected == []


def template_region(overrides):
    return dict(overrides).get("region", synthesize().stack.settings.region)
