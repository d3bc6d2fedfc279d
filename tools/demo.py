"""`make demo`: train/export the demo captioner, deploy to the local AWS, drop images, caption them, report."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from runtime.registry import POINTER_KEY
from tools import flow, local, models
from tools.local_aws import aws_client
from tools.paths import LOCAL_STATE, REPO
from tools.run_agent import laptop_agent_config
from tools.tables import table
from tools.target import resolve


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__)
    p.add_argument("--images", type=int, default=48, help="fresh shapes images to drop")
    p.add_argument("--seed", type=int, default=2026, help="seed of the fresh images (training used others)")
    p.add_argument("--model", type=Path, default=REPO / "demo-model")
    p.add_argument("--artifact", type=Path, default=REPO / "dist" / "demo.pt2")
    args = p.parse_args(argv)

    say("[1/6] demo captioner: train (deterministic, about 2 minutes) or reuse, then export with the parity gate")
    flow.ensure_artifact(flow.ensure_demo_model(args.model), args.artifact)
    say("[2/6] local AWS: moto on localhost + cdk deploy of this app")
    started_here = not LOCAL_STATE.exists()
    outputs = local.up() if started_here else local.local_outputs()
    target = resolve("local")
    try:
        s3 = aws_client("s3", target.region, target.endpoint_url)
        sqs = aws_client("sqs", target.region, target.endpoint_url)
        say(f"[3/6] upload {args.artifact.name} and move the model pointer")
        models.upload(s3, outputs["ArtifactsBucket"], outputs.get("ModelPointerKey", POINTER_KEY), args.artifact)
        say(
            f"[4/6] drop {args.images} fresh images and {len(flow.BAD_FILES)} bad files into "
            f"s3://{outputs['ImagesBucket']}/{outputs['ImagesPrefix']}"
        )
        bucket, prefix = outputs["ImagesBucket"], outputs["ImagesPrefix"]
        truth = flow.drop_images(s3, bucket, prefix, args.images, args.seed)
        bad = flow.drop_bad_files(s3, bucket, prefix)
        say("[5/6] run the agent until the queue is drained (--burst)")
        with tempfile.TemporaryDirectory() as tmp:
            run = flow.run_agent(target, laptop_agent_config(target, "cpu"), Path(tmp), "--burst")
        if run.code != 0:
            say(f"agent exited with {run.code}; last log lines: {run.log[-5:]}")
            return 1
        say("[6/6] results")
        return report(s3, sqs, outputs, truth, bad, run)
    finally:
        if started_here:
            local.down()


def report(s3, sqs, outputs, truth: dict, bad: dict, run: flow.AgentRun) -> int:
    """Print the table and the one-line summary; 0 when every input has its record and accuracy >= 95%."""
    results = flow.read_results(s3, outputs["ResultsBucket"], outputs["ResultsPrefix"], [*truth, *bad])
    right, rows = 0, []
    for key, expected in truth.items():
        got = (results[key] or {}).get("caption", f"<{(results[key] or {}).get('error', 'no result')}>")
        right += got == expected
        rows.append((key.rsplit("/", 1)[-1], got, expected, "ok" if got == expected else "MISS"))
    print(table(("image", "caption", "expected", ""), rows))
    print()
    handled, rows = 0, []
    for key, fragment in bad.items():
        record = results[key] or {}
        ok = record.get("status") == "error" and fragment in record.get("error", "")
        handled += ok
        rows.append((key.rsplit("/", 1)[-1], record.get("status", "NO RECORD"), record.get("error", "")[:90]))
    print(table(("bad file", "record", "error"), rows))
    left = flow.queue_depth(sqs, outputs["QueueUrl"]) + flow.queue_depth(sqs, outputs["DeadLetterQueueUrl"])
    processing_s = max(run.busy_s, 1e-9)
    accuracy = right / len(truth)
    rate = (len(truth) + len(bad)) / processing_s
    print(f"\nqueue and dead-letter queue: {left} message(s) left; agent start-up {run.start_s:.1f} s")
    print(
        f"demo: accuracy {accuracy:.1%} ({right}/{len(truth)}), {len(truth)} images, "
        f"{handled}/{len(bad)} bad files as error records, {rate:.1f} images/s"
    )
    return 0 if accuracy >= 0.95 and handled == len(bad) and left == 0 else 1


if __name__ == "__main__":
    from runtime.cli_errors import run

    sys.exit(run(main, None, "demo"))
