"""A part's progress as the agent's log lines, counters and metrics (a part is long: the dashboard, the FleetStalled
alarm and scaling must see its images as they are captioned, not at its end)."""

from __future__ import annotations

import dataclasses
import time

from runtime.agent.config import AgentConfig
from runtime.agent.metrics import batch_metrics, log
from runtime.agent.parts.run import Outcome, Progress
from runtime.agent.settle import DONE
from runtime.agent.work import Message, ShardRef


class ShardReport:
    """A shard's progress as the agent's counters and metric lines, so the dashboard, the FleetStalled alarm and
    scaling see dataset work as images: a `shard_progress` line every `every_s` during a long shard, and one
    `shard` line at its end. Images of a shard that is redone later count once more then (as a retried batch's)."""

    def __init__(self, config: AgentConfig, counters, ref: ShardRef, every_s: float = 30.0):
        self.config, self.counters, self.ref, self.every_s = config, counters, ref, every_s
        self.reported, self.last = Progress(), time.monotonic()

    def progress(self, done: Progress) -> None:
        if time.monotonic() - self.last >= self.every_s:
            log(
                "info",
                event="shard_progress",
                job=self.ref.job_id,
                index=self.ref.index,
                samples=done.samples,
                ok=done.ok,
                errors=done.errors,
                **self._since_last(done, [], messages=(0, 0)),
            )

    def finish(self, outcome: Outcome, message: Message) -> None:
        done, marker, seconds = outcome.progress, outcome.marker or {}, outcome.seconds
        log(
            "info" if outcome.action == DONE and not marker.get("error") else "warning",
            event="shard",
            job=self.ref.job_id,
            index=self.ref.index,
            run=self.ref.run,
            action=outcome.action,
            status=marker.get("status"),
            samples=done.samples,
            ok=done.ok,
            errors=done.errors,
            seconds=round(seconds, 3),
            images_per_s=round(done.samples / seconds, 2) if seconds else 0.0,
            device_s=round(done.device_s, 3),
            reason=outcome.reason or None,
            totals=self.counters.as_dict(),
            **self._since_last(done, [max(0.0, message.received_at - message.sent_at)], messages=(1, done.samples)),
        )

    def _since_last(self, done: Progress, waits_s: list[float], messages: tuple[int, int]) -> dict:
        """The metrics since the last line; `messages`: (the part's message, its images) on its last line, else 0s."""
        ok, errors = done.ok - self.reported.ok, done.errors - self.reported.errors
        calls, device_s = done.device_calls - self.reported.device_calls, done.device_s - self.reported.device_s
        self.counters.done += ok
        self.counters.failed += errors
        self.reported, self.last = dataclasses.replace(done), time.monotonic()
        return batch_metrics(
            self.config,
            messages=messages[0],
            message_images=messages[1],
            done=ok,
            failed=errors,
            size=round((ok + errors) / calls) if calls else 0,
            device_s=device_s,
            latencies_s=[],
            waits_s=waits_s,
        )
