"""`python -m tools.run_agent [--burst] [--device cpu]`: run the agent here against the configured stack."""

from __future__ import annotations

import argparse
import json
import os
import sys

from tools import target as targets
from tools.outputs import agent_config, stack_outputs
from tools.paths import LOCAL_DIR


def laptop_agent_config(target: targets.Target, device: str = "auto") -> dict:
    """The workers' config from the stack outputs, adjusted for a run on this machine."""
    config = agent_config(stack_outputs(target.stack_name, target.region, target.endpoint_url), device=device)
    # No instance metadata here: never poll 169.254.169.254 from a laptop or CI machine.
    config["imds_url"] = ""
    config["cache_dir"] = str(LOCAL_DIR / "cache")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.run_agent", description=__doc__)
    parser.add_argument("--target", choices=("local", "aws"), default=None)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args, agent_args = parser.parse_known_args(argv)
    target = targets.resolve(args.target)
    path = LOCAL_DIR / f"agent-{target.stack_name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(laptop_agent_config(target, args.device), indent=1) + "\n")
    print(f"agent config: {path} (target {target.endpoint_url or 'AWS ' + target.region})", file=sys.stderr)
    os.execve(
        sys.executable, [sys.executable, "-m", "runtime", "agent", "--config", str(path), *agent_args], target.env()
    )


if __name__ == "__main__":
    from runtime.cli_errors import run

    sys.exit(run(main, None, "run-agent"))
