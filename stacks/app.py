"""The CDK app's builder: read the settings once, build the CaptionKit stack, check it with cdk-nag, synthesize.

`cdk synth/deploy` runs the top-level app.py (cdk.json's "app"), which calls `main`; the stack tests build the same
app in-process through stacks/synth.py.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.captionkit_stack import CaptionKitStack
from stacks.settings import Settings

CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"  # its "context" block is the settings' defaults


def build(app: cdk.App, *, nag: bool = True) -> CaptionKitStack:
    """Add the stack to `app` from its context (cdk.json plus `-c` overrides); register cdk-nag."""
    settings = Settings.from_context(app.node.try_get_context)
    stack = CaptionKitStack(app, "CaptionKit", settings=settings)
    if nag:
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


def main() -> None:
    """What `cdk synth` runs: the app from cdk.json's context and the command line's `-c` overrides."""
    application = cdk.App()
    build(application)
    application.synth()
