"""`cdk synth` with the project's CLI works offline: no credentials, no network, no context lookups."""

import json
import os
import subprocess

from tools.paths import CDK_CLI as CDK
from tools.paths import REPO

UNREACHABLE_PROXY = "http://127.0.0.1:9"  # any attempt to reach the network fails fast


def test_cdk_synth_needs_no_credentials_network_or_lookups(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env.update(
        HOME=str(tmp_path),
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        HTTP_PROXY=UNREACHABLE_PROXY,
        HTTPS_PROXY=UNREACHABLE_PROXY,
        http_proxy=UNREACHABLE_PROXY,
        https_proxy=UNREACHABLE_PROXY,
        NO_PROXY="",
        no_proxy="",
        CDK_VALIDATION="false",
    )  # cfn-lint checks the templates (test_stack_lint); saves ~16 s
    out = tmp_path / "cdk.out"
    result = subprocess.run(
        [str(CDK), "synth", "--quiet", "--output", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert "missing" not in manifest  # a context lookup would be listed here
    [stack] = [a for a in manifest["artifacts"].values() if a["type"] == "aws:cloudformation:stack"]
    assert stack["environment"] == "aws://unknown-account/us-east-1"
    assert (out / stack["properties"]["templateFile"]).exists()
