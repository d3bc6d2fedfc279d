"""`python -m tools.submit_wait URI... [--wait] [--timeout S]`: `python -m runtime submit`, then follow the job's bar.

The runtime's submit stays free of laptop code (it runs on the instance too); this wraps it for `make submit WAIT=1`.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys

from runtime import aws
from runtime.agent.config import load_config
from runtime.agent.submit import main as submit
from tools.job_progress import JobReader, wait


def _config_path(argv: list[str]) -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config")
    return parser.parse_known_args(argv)[0].config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.submit_wait", description=__doc__.split("\n")[0],
                                     add_help=False)
    parser.add_argument("--wait", action="store_true", help="follow the job until its summary is written")
    parser.add_argument("--timeout", type=float, help="with --wait: give up after SECONDS (exit 3)")
    parser.add_argument("--poll", type=float, default=5.0, help="with --wait: seconds between looks (5)")
    ours, rest = parser.parse_known_args(argv)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = submit(rest)
    sys.stdout.write(printed.getvalue())
    if code != 0 or not ours.wait:
        return code
    submitted = json.loads(printed.getvalue().strip().splitlines()[-1])
    if not submitted["summary"].startswith("s3://"):
        print("submit: cannot wait: the config names no results bucket (set results_bucket or images_bucket)",
              file=sys.stderr)
        return 2
    region = load_config(_config_path(rest)).region
    reader = JobReader.from_summary_uri(aws.client("s3", region), submitted["summary"], submitted["job_id"])
    try:
        state = wait(reader, poll_s=ours.poll, timeout_s=ours.timeout)
    except TimeoutError as exc:
        print(f"submit: {exc}; follow it with make status JOB={submitted['job_id']}", file=sys.stderr)
        return 3
    print(json.dumps({"job_id": state.job_id, "done": state.done, "failed": state.failed, "total": state.total,
                      "summary": state.summary_uri}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
