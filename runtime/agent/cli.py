"""`python -m runtime agent`: start-up in numbered steps, then the worker loop until told to stop."""

from __future__ import annotations

import argparse
import os
import signal
import time

from runtime import aws
from runtime.agent.config import load_config
from runtime.agent.lifecycle import Lifecycle, WarmPoolGate, load_for_service
from runtime.agent.metrics import log, setup_logging
from runtime.agent.model.swap import ModelWatcher, warm_up
from runtime.agent.siblings import Siblings, complete_for_instance
from runtime.agent.watchdog import Watchdog
from runtime.agent.worker import Worker
from runtime.errors import CaptionKitError
from runtime.load_policy import device_without_cpu_fallback
from runtime.untrusted import sandbox


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m runtime agent",
        description=(
            "Caption images named by the SQS queue's messages and write one result JSON per image. "
            "Every setting can also come from CAPTIONKIT_<SETTING> (which wins over the file)."
        ),
    )
    parser.add_argument("--config", help="JSON file of settings (optional when the environment sets them)")
    parser.add_argument("--burst", action="store_true", help="exit once the queue holds no messages at all")
    parser.add_argument("--max-batches", type=int, default=None, help="exit after this many batches")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run the agent; returns the process exit code (0 after a drain, 2 on a start-up error)."""
    args = parse_args(argv)
    setup_logging()
    started = time.monotonic()
    try:
        # 1. settings, 2. the device, 3. the current model (pointer -> download -> checksum -> load), 4. warm-up
        config = load_config(args.config)
        config.require("queue_url", "artifacts_bucket", "images_bucket")  # no images bucket: nothing to caption
        sandbox.configure(
            sandbox.Limits(memory_bytes=config.decoder_memory_bytes, cpu_s=config.decoder_cpu_s),
            keep=config.prefetch_threads + 2,
        )
        siblings = Siblings(config)
        siblings.hold()
        watchdog = Watchdog(config.hold_limit_s)
        watchdog.start()  # systemd's watchdog runs from the start: pet it through a long download or compile
        device = device_without_cpu_fallback(config.device)
        s3, sqs = aws.client("s3", config.region), aws.client("sqs", config.region)
        # a service waits for its first model; a burst run (a laptop, a test) has nothing to wait for
        # (with a warm pool: no work while this instance is prepared for the pool; runtime/agent/lifecycle.py)
        gate = (
            WarmPoolGate(Lifecycle(config, None), aws.client("autoscaling", config.region))
            if config.launch_hook_name
            else None
        )
        captioner, pointer = load_for_service(config, s3, device, gate, burst=args.burst)
        warm_s = warm_up(captioner)
    except CaptionKitError as exc:
        log("error", event="fatal", reason=str(exc))
        return 2
    except Exception as exc:  # noqa: BLE001 - S3 unreachable at boot: say so, let the supervisor restart us
        log("error", exc_info=True, event="fatal", reason=f"{exc.__class__.__name__}: {exc}")
        return 1
    log(
        "info",
        event="started",
        model=captioner.name,
        sha256=pointer["sha256"],
        device=device,
        backend=getattr(captioner, "backend", config.backend),
        quantize=getattr(captioner, "quantize", None),
        max_batch=captioner.max_batch,
        warm_up_s=round(warm_s, 3),
        start_s=round(time.monotonic() - started, 3),
        queue=config.queue_url,
        results=f"s3://{config.results_bucket_name}/{config.results_prefix}",
    )
    # 5. the background watchers, 6. the loop
    watcher = ModelWatcher(config, s3, device, pointer["sha256"])
    worker = Worker(
        config,
        captioner,
        pointer,
        sqs=sqs,
        s3=s3,
        burst=args.burst,
        max_batches=args.max_batches,
        watcher=watcher,
        watchdog=watchdog,
    )
    lifecycle = Lifecycle(config, worker.stop, autoscaling=aws.client("autoscaling", config.region))
    worker.on_exit.append(lambda: _safely(lambda: complete_for_instance(lifecycle, siblings, config)))
    install_signal_handlers(worker)
    watcher.start()
    lifecycle.start()
    try:
        return worker.run()
    finally:
        watcher.stop()
        lifecycle.stop()


def install_signal_handlers(worker: Worker) -> None:
    """First SIGTERM/SIGINT: drain. Second: exit at once (messages return after their visibility timeout)."""

    def handle(signum, _frame):
        name = signal.Signals(signum).name
        if worker.stopping.is_set():
            log("warning", event="exit_now", signal=name, held=len(worker.inbox.held()), **worker.counters.as_dict())
            worker.journal.clear()  # asked to exit: not a crash of the images on the device
            os._exit(128 + signum)
        worker.stop(f"signal {name}")

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _safely(callback) -> None:
    try:
        callback()
    except Exception as exc:  # noqa: BLE001 - shutting down anyway; the hook times out on its own
        log("error", event="lifecycle_complete_failed", reason=f"{exc.__class__.__name__}: {exc}")
