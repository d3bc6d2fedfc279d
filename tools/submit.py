"""`python -m tools.submit ...`: the runtime's `submit` aimed at the deployed stack, then (`--wait`) follow the job.

The runtime's submit (runtime.agent.submit.submit: a function that returns what it queued) stays free of laptop
code (it runs on the instance too, with the instance's config). On a laptop nothing has set `queue_url` or the
buckets: this fills them from the deployed stack's AgentConfig output (local after `make local-up`, else AWS, as
`make upload` finds its bucket) unless `--config` or `CAPTIONKIT_QUEUE_URL` already says where to send. Every other
argument goes to `submit` unchanged (PREFIX, --shards, --manifest, --retry, --job-id, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from runtime import aws
from runtime.agent.config import ENV_PREFIX, load_config
from runtime.agent.submit import main as runtime_submit
from runtime.agent.submit import submit as runtime_submit_job
from runtime.errors import CaptionKitError, SubmitRefused
from tools import target as targets
from tools.job_folder import JobReader, ShardJobReader
from tools.job_progress import wait
from tools.outputs import agent_config, stack_outputs

QUEUE_ENV = ENV_PREFIX + "QUEUE_URL"
LOCAL_WAKE = "no fleet on the local AWS: start a local agent with `make agent` (ARGS=--burst: until the queue is empty)"


def _runtime_args(argv: list[str]) -> argparse.Namespace:
    """The one of `runtime submit`'s arguments this wrapper looks at: its config."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config")
    return parser.parse_known_args(argv)[0]


def stack_submit_config(target: targets.Target) -> dict:
    """The agent config the workers run with (queue, buckets, prefixes, region, group): what submit needs."""
    return agent_config(stack_outputs(target.stack_name, target.region, target.endpoint_url))


def aim_at_stack(target: targets.Target, folder: Path, environ=os.environ) -> Path:
    """Write the stack's agent config into `folder` and point this process's AWS clients at the target."""
    path = Path(folder) / f"submit-{target.stack_name}.json"
    config = stack_submit_config(target)
    if target.endpoint_url is not None:  # moto's group has no instances to wake: the local agent is `make agent`
        config["asg_name"] = ""
    path.write_text(json.dumps(config, indent=1) + "\n")
    env = target.env()
    for name in [name for name in environ if name.startswith("AWS_") and name not in env]:
        del environ[name]  # a profile or a real endpoint of the caller must not redirect a local target
    environ.update(env)
    return path


def submit_to_stack(argv: list[str], target_name: str | None = None, resolve=None) -> tuple[dict, str]:
    """The runtime's `submit` with `argv` (the stack's config added unless given): (what it queued, the region its
    config names, for following the job). SubmitRefused says why nothing was queued."""
    local = False
    with tempfile.TemporaryDirectory(prefix="captionkit-submit-") as folder:
        if _runtime_args(argv).config is None and QUEUE_ENV not in os.environ:
            target = (resolve or targets.resolve)(target_name)
            argv = [*argv, "--config", str(aim_at_stack(target, Path(folder)))]
            local = target.endpoint_url is not None
        answer = runtime_submit_job(argv)
        region = load_config(_runtime_args(argv).config).region
    return ({**answer, "wake": LOCAL_WAKE} if local else answer), region


def submit(argv: list[str], target_name: str | None = None, resolve=None) -> tuple[int, str, str]:
    """`submit_to_stack` as the command shows it: (exit code, the answer as one JSON line, the region); a refusal is
    said on stderr (exit code 2, nothing printed)."""
    try:
        answer, region = submit_to_stack(argv, target_name, resolve)
    except SubmitRefused as exc:
        print(f"submit: {exc}", file=sys.stderr)
        return 2, "", ""
    return 0, json.dumps(answer) + "\n", region


def follow(submitted: dict, region: str, *, poll_s: float, timeout_s: float | None) -> dict:
    """Follow a submitted job (any kind) to the summary of the run it queued; the final counts."""
    reader = JobReader.from_summary_uri(aws.client("s3", region), submitted["summary"], submitted["job_id"])
    state = wait(ShardJobReader(reader), run=submitted["run"], poll_s=poll_s, timeout_s=timeout_s)
    return state.counts()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.submit", description=__doc__.split("\n")[0], add_help=False)
    parser.add_argument("--wait", action="store_true", help="follow the job until its summary is written")
    parser.add_argument("--timeout", type=float, help="with --wait: give up after SECONDS (exit 3)")
    parser.add_argument("--poll", type=float, default=5.0, help="with --wait: seconds between looks (5)")
    parser.add_argument(
        "--target",
        choices=("local", "aws"),
        default=None,
        help="default: local after `make local-up`, else aws (or CAPTIONKIT_TARGET)",
    )
    ours, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if "-h" in rest or "--help" in rest:
        parser.print_help()
        return runtime_submit(["--help"])
    try:
        submitted, region = submit_to_stack(rest, ours.target)
    except CaptionKitError as exc:  # refused, no stack deployed there, or it lacks outputs: one line, and what to do
        print(f"submit: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(submitted))
    if not ours.wait:
        return 0
    if not submitted["summary"].startswith("s3://"):
        print(
            "submit: cannot wait: the config names no results bucket (set results_bucket or images_bucket)",
            file=sys.stderr,
        )
        return 2
    try:
        print(json.dumps(follow(submitted, region, poll_s=ours.poll, timeout_s=ours.timeout)))
    except TimeoutError as exc:
        print(f"submit: {exc}; follow it with make status JOB={submitted['job_id']}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    from runtime.cli_errors import run

    sys.exit(run(main, None, "submit"))
