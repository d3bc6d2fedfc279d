"""Where the laptop side finds the repository and keeps its local state (`.local/`, git-ignored)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCAL_DIR = REPO / ".local"  # the local AWS's pid, log, state and env files, agent configs, the model cache
LOCAL_STATE = LOCAL_DIR / "local-aws.json"  # written by `tools.local up`: endpoint, region, stack name
LOCAL_ENV = LOCAL_DIR / "env"  # `source .local/env` points the aws CLI and boto3 at the local AWS
CDK_CLI = REPO / "node_modules" / ".bin" / "cdk"  # pinned in package.json, installed by `make setup`
