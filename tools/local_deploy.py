"""Deploy the project's own CDK app to local moto with the real cdk CLI, then do what moto ignores."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from runtime.errors import CaptionKitError
from tools.local_aws import aws_client, child_env
from tools.moto_gaps import apply_what_moto_ignores, synthesized_stack
from tools.paths import CDK_CLI as CDK
from tools.paths import REPO

LOCAL_AMI = "ami-12345678"  # moto has no public SSM parameters, so no DLAMI lookup


class LocalDeployError(CaptionKitError, RuntimeError):
    """`cdk bootstrap` or `cdk deploy` against local moto failed; the message carries the CLI output."""


def deploy(
    endpoint_url: str, *, region: str, output_dir: Path, context: dict[str, str] | None = None, timeout_s: float = 300
) -> str:
    """`cdk bootstrap` and `cdk deploy` (a change set, as on AWS) to moto, then the local-only step.

    Returns the deployed stack's name.
    """
    if not CDK.exists():
        raise LocalDeployError(f"the cdk CLI is missing at {CDK}: run `make setup` (npm ci) first")
    # cfn-lint in `make test` checks these same templates; skip the CLI's 16 s built-in validation
    env = {**child_env(endpoint_url, region), "CDK_VALIDATION": "false"}
    account = aws_client("sts", region, endpoint_url).get_caller_identity()["Account"]
    # bootstrap synthesizes the app too: into this deploy's own folder, so that two deploys from one clone (make
    # local-up beside make test, or the suite's workers) never share the repository's cdk.out
    _run(
        [str(CDK), "bootstrap", f"aws://{account}/{region}", "--no-notices", "--output", str(output_dir)],
        env,
        timeout_s,
    )
    shutil.rmtree(output_dir, ignore_errors=True)
    context = {"ami": LOCAL_AMI, "region": region, **(context or {})}
    _run(
        [
            str(CDK),
            "deploy",
            "--all",
            "--require-approval=never",
            "--no-notices",
            "--output",
            str(output_dir),
            *[arg for key, value in context.items() for arg in ("-c", f"{key}={value}")],
        ],
        env,
        timeout_s,
    )
    stack_name, template = synthesized_stack(output_dir)
    apply_what_moto_ignores(template, stack_name, region=region, endpoint_url=endpoint_url)
    return stack_name


def _run(command: list[str], env: dict[str, str], timeout_s: float) -> None:
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise LocalDeployError(f"{' '.join(command[:2])} failed ({result.returncode}):\n{result.stderr[-4000:]}")
