"""The agents of one instance (one per GPU): life locks, and lifecycle hooks completed once per instance.

The multi-GPU launch is stacks/boot/bootstrap.sh: one systemd unit per GPU (captionkit-agent@<index>), each agent
given its `agent_index`, the instance's `agent_count` and the shared `agents_dir` that this module locks in.

An auto scaling lifecycle hook holds an instance, not an agent: the first CONTINUE lets the instance go, so an
agent that completed it while another still drains its batch would cut that batch. Each agent therefore holds
an exclusive `flock` on `<agents_dir>/agent-<index>.lock` for as long as its process lives (the kernel drops it
however the process ends: exit, crash, SIGKILL). Agent 0 completes the hooks; for the terminating one it first
waits until it can take every other agent's lock (each has drained and exited) or until their drain bound has
passed. The other agents drain and exit without completing anything.
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path

from runtime.agent.metrics import log
from runtime.errors import CaptionKitError


class SiblingError(CaptionKitError):
    """Another live process already runs as this agent (the same index on the same instance)."""


class Siblings:
    """This agent's place among the agents of its instance (`agent_index` of `agent_count`)."""

    def __init__(self, config):
        self.index, self.count = config.agent_index, config.agent_count
        self.folder = Path(config.agents_dir).expanduser() if config.agents_dir else None
        self._held = None

    @property
    def lead(self) -> bool:
        """Agent 0: the one that completes the instance's lifecycle hooks."""
        return self.index == 0

    def _lock_path(self, index: int) -> Path:
        return self.folder / f"agent-{index}.lock"

    def hold(self) -> None:
        """Take this agent's life lock for the rest of the process; alone on its instance there is none."""
        if self.count == 1:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        held = open(self._lock_path(self.index), "a")
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.close()
            raise SiblingError(
                f"{self._lock_path(self.index)} is held: another process runs as agent "
                f"{self.index}; one agent per GPU, started by its systemd unit"
            ) from None
        self._held = held

    def running(self) -> list[int]:
        """The other agents of this instance whose process is alive now."""
        alive = []
        for index in range(self.count):
            if index == self.index:
                continue
            with open(self._lock_path(index), "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    alive.append(index)
                    continue
                fcntl.flock(lock, fcntl.LOCK_UN)
        return alive

    def wait_for_others(self, timeout_s: float, poll_s: float = 1.0, sleep=time.sleep) -> list[int]:
        """Wait until every other agent has exited or `timeout_s` passed; returns those still running."""
        if self.count == 1:
            return []
        deadline = time.monotonic() + timeout_s
        while (alive := self.running()) and time.monotonic() < deadline:
            sleep(poll_s)
        return alive


def complete_for_instance(lifecycle, siblings: Siblings, config) -> None:
    """After this agent's drain: agent 0 completes the terminating hook once the others are gone; others skip."""
    if not lifecycle.terminating:
        return
    if not siblings.lead:
        log("info", event="lifecycle_left_to_agent_0", agent=siblings.index)
        return
    # the others saw the same notice within one IMDS poll and drain within their own bound
    still = siblings.wait_for_others(config.drain_timeout_s + 2 * config.imds_poll_s + 5)
    if still:
        log(
            "warning",
            event="lifecycle_agents_still_running",
            agents=still,
            note="their drain bound has passed; completing the hook anyway",
        )
    lifecycle.complete()
