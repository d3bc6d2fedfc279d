"""`python -m bench.wake`: the scale-from-zero phases this machine can time (BENCHMARKS.md, "Cold start").

1. the wake-up call (runtime/lambdas/wake_on_upload/wake.py: describe the group, set it 0 -> 1) against a moto
   server on localhost: the function's own time, not AWS's API latency;
2. a resumed worker's cache check: the SHA-256 of a cached .pt2 of the real base size (944 MiB), which replaces
   the download when the pointer has not moved while the instance was in the warm pool.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.timing import summary
from runtime.artifact.checksum import file_sha256
from runtime.lambdas.wake_on_upload import wake
from tools.local_aws import MotoServer, aws_client, free_port

BASE_ARTIFACT_MIB = 944


def time_wake(runs: int) -> dict:
    with tempfile.TemporaryDirectory() as state, MotoServer(Path(state), free_port()) as server:
        ec2, autoscaling = (aws_client(s, "us-east-1", server.endpoint_url) for s in ("ec2", "autoscaling"))
        ec2.create_launch_template(LaunchTemplateName="bench-lt", LaunchTemplateData={"ImageId": "ami-12c6146b"})
        times = []
        for n in range(runs):
            autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=f"bench-{n}",
                LaunchTemplate={"LaunchTemplateName": "bench-lt"},
                MinSize=0,
                MaxSize=2,
                DesiredCapacity=0,
                AvailabilityZones=["us-east-1a"],
            )
            started = time.perf_counter()
            assert wake.wake(autoscaling, f"bench-{n}", last_look={})["action"] == "woke"
            times.append(time.perf_counter() - started)
        return summary(times)


def time_cache_check(mib: int, runs: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".pt2") as cached:
        chunk = os.urandom(1024 * 1024)
        for _ in range(mib):
            cached.write(chunk)
        cached.flush()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            file_sha256(Path(cached.name))
            times.append(time.perf_counter() - started)
        return summary(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wake", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mib", type=int, default=BASE_ARTIFACT_MIB)
    args = parser.parse_args(argv)
    result = {
        "load_average_before": os.getloadavg(),
        "wake_call_moto": time_wake(args.runs),
        f"sha256_{args.mib}_mib": time_cache_check(args.mib, args.runs),
        "load_average_after": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
