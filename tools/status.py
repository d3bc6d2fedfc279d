"""`python -m tools.status [--watch] [--job ID]`: the queue, the fleet, the model, what was done and what it cost."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

from runtime import registry
from runtime.agent.notice import collect_command
from runtime.errors import CaptionKitError
from stacks.settings import Settings
from tools import cost, fleet_view, job_folder, job_progress
from tools import target as targets
from tools.local_aws import aws_client
from tools.outputs import stack_outputs
from tools.paths import REPO
from tools.tables import fields

CLEAR = "\x1b[H\x1b[2J"


def settings_prices() -> dict[str, float]:
    """The instance_prices setting as cdk.json says (the table in stacks/prices.py plus its overrides)."""
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    return Settings.from_context(context.get).instance_prices


def priced_types(fleet: dict) -> list[str]:
    """The running instances' types, else the group's first choice (what scaling from zero would launch)."""
    return [t for (t, _), n in fleet["running"] if t for _ in range(n)] or fleet["configured_types"][:1]


def snapshot(
    target: targets.Target, outputs: dict[str, str], prices: dict[str, float], now: datetime.datetime | None = None
) -> dict:
    """Everything the status screen shows, read from the stack's services now."""
    now = now or datetime.datetime.now(datetime.UTC)
    client = lambda service: aws_client(service, target.region, target.endpoint_url)  # noqa: E731
    config = json.loads(outputs["AgentConfig"])
    sqs = client("sqs")
    fleet = fleet_view.fleet(client("autoscaling"), client("ec2"), outputs["GroupName"])
    types = priced_types(fleet)
    return {
        "target": target.endpoint_url or f"AWS {target.region}",
        "stack": target.stack_name,
        "now": now,
        "queue": fleet_view.queue_counts(sqs, outputs["QueueUrl"]),
        "dead_letters": fleet_view.queue_counts(sqs, outputs["DeadLetterQueueUrl"])["waiting"],
        "fleet": fleet,
        "model": fleet_view.model(
            client("s3"), outputs["ArtifactsBucket"], outputs.get("ModelPointerKey", registry.POINTER_KEY)
        ),
        "activity": fleet_view.activity(
            client("cloudwatch"),
            config["metrics_namespace"],
            outputs["QueueUrl"].rsplit("/", 1)[-1],
            outputs["GroupName"],
            prices,
            types,
            now,
        ),
        "gpus": fleet_view.per_gpu(
            client("cloudwatch"), config["metrics_namespace"], outputs["QueueUrl"].rsplit("/", 1)[-1], now
        ),
        "errors": fleet_view.recent_errors(client("logs"), outputs["LogGroup"], now - datetime.timedelta(hours=1)),
    }


def scaling_note(snap: dict) -> str:
    """Whether the fleet is starting from zero, idle, or serving."""
    fleet, queue = snap["fleet"], snap["queue"]
    if fleet["desired"] > 0 and fleet["in_service"] == 0:
        return f"scaling from zero: {fleet['pending']} launching (boot and model load take minutes)"
    if fleet["desired"] == 0 and queue["waiting"] + queue["delayed"] > 0:
        return (
            "scaling from zero: messages wait and no instance is wanted yet "
            "(the wake-up function or the FromZero policy adds one)"
        )
    if fleet["desired"] == 0:
        return "idle at zero: nothing to do, nothing billed"
    return f"serving with {fleet['in_service']} instance(s)"


def gpu_line(running_gpus: int | None, gpus: list[dict], shown: int = 3) -> str:
    """GPUs running, how many captioned in the last hour, and the least busy few: images, share of the hour on
    the device (every GPU of an instance should be busy when messages wait)."""
    running = (
        "? GPU(s) running (a type not in stacks/instance_types.py)"
        if running_gpus is None
        else f"{running_gpus} GPU(s) running"
    )
    least = ", ".join(f"{g['gpu']} {g['done']} ({g['device_share']:.0%})" for g in gpus[::-1][:shown])
    busy = sum(1 for g in gpus if g["done"])
    return f"{running}, {busy} captioned in the last hour" + (f"; least busy: {least}" if least else "")


def capture_note(activity: dict) -> str:
    """The last-hour line's tail when decode graphs could not be captured (those models decode on the eager loop)."""
    failed = activity.get("capture_failed_hour", 0)
    if not failed:
        return ""
    return (
        f"; {failed} decode graph capture(s) failed: those models decode on the eager loop, slower "
        "(capture_failed in the agents' logs says why)"
    )


def render(snap: dict) -> str:
    """One screen of text."""
    q, f, a, c = snap["queue"], snap["fleet"], snap["activity"], snap["activity"]["cost"]
    running = ", ".join(f"{n} x {t or 'unknown type'} {kind}" for (t, kind), n in f["running"]) or "none running"
    m = snap["model"]
    money = lambda v: "?" if v is None else f"${v:,.2f}"  # noqa: E731
    rows = [
        (
            "queue",
            f"{q['waiting']} waiting, {q['in_flight']} in flight, {q['delayed']} delayed; "
            f"dead letters {snap['dead_letters']}",
        ),
        (
            "fleet",
            f"desired {f['desired']} (min {f['min']}, max {f['max']}): {f['pending']} pending, "
            f"{f['in_service']} in service, {f['terminating']} terminating; {running}",
        ),
        ("", scaling_note(snap)),
        (
            "model",
            f"{m['name']}  sha256 {m['sha256'][:12]}  published {m['published']}"
            if m
            else "none published yet: make upload ARTIFACT=dist/model.pt2",
        ),
        (
            "last hour",
            f"{a['done_hour']} done, {a['failed_hour']} failed, {a['per_minute']} images/min{capture_note(a)}",
        ),
        ("per GPU", gpu_line(f.get("gpus"), snap.get("gpus", []))),
        (
            "last day",
            f"{c['instance_hours']} instance-hours, {c['images']} images: {money(c['cost'])}, "
            f"{money(c['per_1000'])} per 1,000 images; idle {money(c['idle_cost'])} ({c['idle_hours']} h)",
        ),
        ("", f"price: {c['price_source']}"),
        ("last errors", "none in the last hour" if not snap["errors"] else ""),
    ]
    rows += [("", f"{e['time']:%H:%M:%S} {e['uri']}: {e['reason'][:120]}") for e in snap["errors"]]
    title = f"CaptionKit {snap['stack']} at {snap['target']}  {snap['now']:%Y-%m-%d %H:%M:%S} UTC"
    return title + "\n" + fields(rows)


def run_cost_line(target: targets.Target, outputs: dict[str, str], state: job_folder.ShardState) -> str:
    """What the fleet has cost since the run was queued: an estimate (see cost.run_cost)."""
    client = lambda service: aws_client(service, target.region, target.endpoint_url)  # noqa: E731
    fleet = fleet_view.fleet(client("autoscaling"), client("ec2"), outputs["GroupName"])
    instances = fleet["pending"] + fleet["in_service"] + fleet["terminating"]
    price, source = cost.hourly_price(priced_types(fleet), settings_prices())
    estimate = cost.run_cost(state.elapsed_s, instances, price)
    spent = "?" if estimate["cost"] is None else f"${estimate['cost']:,.2f}"
    return (
        f"~{spent} so far: {instances} instance(s) now x {estimate['hours']} h since the run was queued x "
        f"{'?' if price is None else f'${price:.4g}'}/h ({source}; assumes the group held this many instances "
        "all along, and counts their idle time and other jobs)"
    )


def dataset_job(
    target: targets.Target,
    outputs: dict[str, str],
    reader: job_folder.JobReader,
    *,
    once: bool,
    timeout_s: float | None,
) -> int:
    """A dataset job's screen (shards, images, images/s, ETA, cost); followed to its run's summary unless once."""
    shards = job_folder.view(reader)
    try:
        state = shards.read()
        print(job_progress.render(state, run_cost_line(target, outputs, state)), flush=True)
        if not once and not state.complete:
            state = job_progress.wait(shards, run=state.run, timeout_s=timeout_s)
            print(job_progress.render(state, run_cost_line(target, outputs, state)))
    except (CaptionKitError, TimeoutError) as exc:
        print(f"status: {exc}", file=sys.stderr)
        return 3
    if state.complete:
        print(json.dumps({**state.counts(), "collect": collect_command(state.job_id)}))
        return 0
    return 3


def job(target: targets.Target, outputs: dict[str, str], job_id: str, *, once: bool, timeout_s: float | None) -> int:
    """Show a job's bar; 0 when complete, 3 when not (with --once or after --timeout)."""
    s3 = aws_client("s3", target.region, target.endpoint_url)
    reader = job_folder.JobReader.for_job(s3, outputs["ResultsBucket"], outputs["ResultsPrefix"], job_id)
    try:
        manifest = reader.read_manifest() if once else job_progress.wait_for_manifest(reader, timeout_s=timeout_s)
    except (CaptionKitError, TimeoutError) as exc:
        print(f"status: {exc}", file=sys.stderr)
        return 3
    if "kind" in manifest:
        return dataset_job(target, outputs, reader, once=once, timeout_s=timeout_s)
    try:
        if once:
            state = reader.read()
            print(job_progress.render(state))
        else:
            state = job_progress.wait(reader, timeout_s=timeout_s)
    except (CaptionKitError, TimeoutError) as exc:
        print(f"status: {exc}", file=sys.stderr)
        return 3
    if state.complete:
        print(
            json.dumps(
                {
                    "job_id": job_id,
                    "done": state.done,
                    "failed": state.failed,
                    "total": state.total,
                    "summary": state.summary_uri,
                    "collect": collect_command(job_id),
                }
            )
        )
        return 0
    return 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.status", description=__doc__.split(":", 1)[1])
    parser.add_argument(
        "--watch", nargs="?", type=float, const=10.0, metavar="SECONDS", help="redraw every SECONDS (10) until Ctrl-C"
    )
    parser.add_argument("--job", metavar="ID", help="follow one batch job until it completes (exit 0)")
    parser.add_argument("--once", action="store_true", help="with --job: look once; exit 0 if complete, else 3")
    parser.add_argument("--timeout", type=float, help="with --job: give up after SECONDS (exit 3)")
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON instead of the screen")
    parser.add_argument("--target", choices=("local", "aws"), default=None)
    args = parser.parse_args(argv)
    target = targets.resolve(args.target)
    outputs = stack_outputs(target.stack_name, target.region, target.endpoint_url)
    if args.job:
        return job(target, outputs, args.job, once=args.once, timeout_s=args.timeout)
    prices = settings_prices()
    try:
        while True:
            snap = snapshot(target, outputs, prices)
            text = json.dumps(snap, default=str, indent=1) if args.json else render(snap)
            print((CLEAR if args.watch and sys.stdout.isatty() else "") + text, flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    from runtime.cli_errors import run

    sys.exit(run(main, None, "status"))
