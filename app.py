"""The CDK app: read the settings once, build the CaptionKit stack, check it with cdk-nag, synthesize."""
from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.captionkit_stack import CaptionKitStack
from stacks.settings import Settings


def build(app: cdk.App, *, nag: bool = True) -> CaptionKitStack:
    """Add the stack to `app` from its context (cdk.json plus `-c` overrides); register cdk-nag."""
    settings = Settings.from_context(app.node.try_get_context)
    stack = CaptionKitStack(app, "CaptionKit", settings=settings)
    if nag:
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


if __name__ == "__main__":
    application = cdk.App()
    build(application)
    application.synth()
