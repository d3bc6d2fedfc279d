"""Local AWS for CaptionKit: `python -m tools.local up|down|outputs|agent-config` (moto plus the cdk CLI)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from tools.local_aws import DEFAULT_PORT, DEFAULT_REGION, MotoServer, aws_env
from tools.local_deploy import deploy
from tools.outputs import stack_outputs
from tools.paths import LOCAL_DIR, LOCAL_ENV, LOCAL_STATE, REPO


def check_settings(items: list[str]) -> dict[str, str]:
    """`key=value` overrides as `cdk deploy -c` takes them, refused here (before moto starts) when a key is not a
    setting or a value is one the stack would refuse."""
    from stacks.settings import CONTEXT_KEY, Settings, SettingsError

    known = {f.name for f in dataclasses.fields(Settings)}
    context = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in known:
            raise SettingsError(
                f"setting {item!r}: expected key=value with a key from cdk.json's {CONTEXT_KEY!r} "
                f"block ({', '.join(sorted(known))})"
            )
        context[key.strip()] = value
    block = json.loads((REPO / "cdk.json").read_text())["context"][CONTEXT_KEY]
    Settings.from_context({CONTEXT_KEY: block, **context}.get)
    return context


def up(
    port: int = DEFAULT_PORT,
    region: str = DEFAULT_REGION,
    context: dict[str, str] | None = None,
    state_dir: Path = LOCAL_DIR,
) -> dict[str, str]:
    """Start moto, deploy the app to it, and return the stack outputs; on failure stop what it started."""
    server = MotoServer(state_dir, port)
    server.start()
    try:
        stack_name = deploy(server.endpoint_url, region=region, output_dir=state_dir / "cdk.out", context=context)
        outputs = stack_outputs(stack_name, region, server.endpoint_url)
    except BaseException:
        server.stop()
        raise
    state = {"endpoint_url": server.endpoint_url, "region": region, "stack_name": stack_name}
    (state_dir / LOCAL_STATE.name).write_text(json.dumps(state, indent=2) + "\n")
    env = aws_env(server.endpoint_url, region)
    exports = [f"export {key}={env[key]}\n" for key in sorted(env)]
    (state_dir / LOCAL_ENV.name).write_text("".join(exports))
    return outputs


def down(state_dir: Path = LOCAL_DIR) -> bool:
    """Stop the moto server that `up` started (by its pid file); True if one was running."""
    stopped = MotoServer(state_dir).stop()
    (state_dir / LOCAL_STATE.name).unlink(missing_ok=True)
    (state_dir / LOCAL_ENV.name).unlink(missing_ok=True)
    return stopped


def local_outputs(state_dir: Path = LOCAL_DIR) -> dict[str, str]:
    """The outputs of the stack that `up` deployed, read from moto like from AWS."""
    try:
        state = json.loads((state_dir / LOCAL_STATE.name).read_text())
    except FileNotFoundError:
        raise SystemExit("local AWS is not up: run `python -m tools.local up` first") from None
    return stack_outputs(state["stack_name"], state["region"], state["endpoint_url"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start moto on localhost and cdk-deploy the app to it")
    start.add_argument("--port", type=int, default=DEFAULT_PORT)
    start.add_argument("--region", default=DEFAULT_REGION)
    start.add_argument(
        "-c",
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting override, as with cdk deploy -c",
    )
    commands.add_parser("down", help="stop the moto server that `up` started")
    commands.add_parser("outputs", help="print the local stack's outputs as JSON")
    config = commands.add_parser("agent-config", help="print an agent config JSON for a local run")
    config.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args(argv)
    if args.command == "up":
        outputs = up(args.port, args.region, check_settings(args.context))
        print(json.dumps(outputs, indent=2))
        print(
            f"local AWS is up: `source {LOCAL_ENV.relative_to(REPO)}` points the aws CLI and boto3 at it; "
            "`python -m tools.local down` stops it",
            file=sys.stderr,
        )
    elif args.command == "down":
        print("stopped local AWS" if down() else "local AWS was not running", file=sys.stderr)
    elif args.command == "outputs":
        print(json.dumps(local_outputs(), indent=2))
    else:
        from tools.run_agent import laptop_agent_config
        from tools.target import resolve

        print(json.dumps(laptop_agent_config(resolve("local"), args.device), indent=2))
    return 0


if __name__ == "__main__":
    from runtime.cli_errors import run

    sys.exit(run(main, None, "local"))
