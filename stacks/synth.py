"""Synthesize the app in-process from cdk.json's context plus overrides: for tests and tools, no CLI, no AWS."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from stacks.app import CDK_JSON, build
from stacks.captionkit_stack import CaptionKitStack


@dataclasses.dataclass(frozen=True)
class Synthesized:
    """One synthesized app: its stack object, the stack's template, and the cloud assembly directory."""

    stack: CaptionKitStack
    template: dict[str, Any]
    assembly_dir: Path


@functools.cache
def synthesize(overrides: tuple[tuple[str, Any], ...] = (), *, nag: bool = False) -> Synthesized:
    """Build and synthesize the app (stacks/app.py's, the one `cdk synth` builds) once per distinct `overrides` (as
    `-c key=value` would)."""
    context = json.loads(CDK_JSON.read_text())["context"]
    context.update(dict(overrides))
    outdir = Path(tempfile.mkdtemp(prefix="captionkit-synth-"))
    atexit.register(shutil.rmtree, outdir, ignore_errors=True)
    # cfn-lint checks every template in the test suite; the CLI's built-in validation would add 16 s here
    app = cdk.App(context=context, outdir=str(outdir), builtin_cloud_formation_validation=False)
    stack = build(app, nag=nag)
    assembly = app.synth()
    template = assembly.get_stack_by_name(stack.stack_name).template
    return Synthesized(stack=stack, template=template, assembly_dir=outdir)
