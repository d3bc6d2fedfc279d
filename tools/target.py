"""Which deployed stack the laptop tools talk to: the local AWS after `make local-up`, else the real account."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from tools.local_aws import child_env
from tools.paths import LOCAL_STATE, REPO


@dataclass(frozen=True)
class Target:
    """A stack name, its region, and the endpoint (None for real AWS)."""

    stack_name: str
    region: str
    endpoint_url: str | None

    def env(self) -> dict[str, str]:
        """Environment for a child process (the agent) aimed at this target."""
        if self.endpoint_url is None:
            return {**os.environ, "AWS_REGION": self.region}
        return child_env(self.endpoint_url, self.region)


def _cdk_settings() -> dict:
    context = json.loads((REPO / "cdk.json").read_text())["context"]["captionkit"]
    return {"stack_name": context.get("stack_name", "CaptionKit"), "region": context.get("region", "us-east-1")}


def resolve(target: str | None = None) -> Target:
    """`CAPTIONKIT_TARGET` (local|aws) decides; by default local when `make local-up` left its state file."""
    target = target or os.environ.get("CAPTIONKIT_TARGET") or ("local" if LOCAL_STATE.exists() else "aws")
    if target == "local":
        if not LOCAL_STATE.exists():
            raise SystemExit("CAPTIONKIT_TARGET=local but the local AWS is not up: run `make local-up` first")
        state = json.loads(LOCAL_STATE.read_text())
        return Target(state["stack_name"], state["region"], state["endpoint_url"])
    if target != "aws":
        raise SystemExit(f"CAPTIONKIT_TARGET={target!r}: expected 'local' or 'aws'")
    settings = _cdk_settings()
    return Target(
        os.environ.get("CAPTIONKIT_STACK", settings["stack_name"]),
        os.environ.get("AWS_REGION", settings["region"]),
        None,
    )
