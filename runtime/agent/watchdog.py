"""systemd's watchdog, without a dependency: `sd_notify` is one datagram to $NOTIFY_SOCKET.

The unit sets `WatchdogSec=`; systemd then passes WATCHDOG_USEC and kills (SIGABRT) an agent that has not said
WATCHDOG=1 for that long, and `Restart=on-failure` starts a fresh one. A thread says it every third of the
interval, but only while the worker makes progress: a receive, or a device call that started less than
`hold_limit_s` ago. A hung CUDA call therefore ends in a restart, not in messages held for 12 hours.
Protocol: https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html (datagram to an AF_UNIX
socket; a leading '@' is an abstract-namespace address).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

from runtime.agent.metrics import log


def sd_notify(state: str, environ=None) -> bool:
    """Send `state` (e.g. 'READY=1', 'WATCHDOG=1') to systemd; False when not run by systemd."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log("error", event="sd_notify_failed", state=state, reason=str(exc))
        return False
    return True


class Watchdog:
    """Progress marks from the worker; pets systemd's watchdog while the last mark is recent enough."""

    def __init__(self, hold_limit_s: float, environ=None):
        self.environ = os.environ if environ is None else environ
        usec = int(self.environ.get("WATCHDOG_USEC", "0") or 0)
        owner = self.environ.get("WATCHDOG_PID", "")
        self.interval_s = usec / 1e6 / 3 if usec and (not owner or owner == str(os.getpid())) else 0.0
        self.hold_limit_s = hold_limit_s
        self.progress_at = time.monotonic()
        self._busy_since: float | None = None  # a device call in progress since
        self.starting = True  # start-up (download, load, compile) has no bound here: healthy until the loop runs
        self._stop = threading.Event()
        self._starved = False

    def ready(self) -> None:
        """Start-up is over: from now on only progress pets the watchdog."""
        self.starting = False
        self.mark()
        sd_notify("READY=1", self.environ)

    def mark(self) -> None:
        self.progress_at = time.monotonic()

    @contextlib.contextmanager
    def device_call(self):
        self._busy_since = time.monotonic()
        try:
            yield
        finally:
            self._busy_since = None
            self.mark()

    def healthy(self) -> bool:
        """False once a device call (or the loop) has made no progress for `hold_limit_s`."""
        if self.starting:
            return True
        since = self._busy_since if self._busy_since is not None else self.progress_at
        return time.monotonic() - since < self.hold_limit_s

    def beat(self) -> bool:
        """Pet the watchdog if healthy; log once when it starts starving it."""
        if self.healthy():
            self._starved = False
            return sd_notify("WATCHDOG=1", self.environ)
        if not self._starved:
            self._starved = True
            log(
                "error",
                event="watchdog_starved",
                hold_limit_s=self.hold_limit_s,
                reason="no progress (a hung device call?): systemd's watchdog will restart the agent",
            )
        return False

    def start(self) -> None:
        """Start petting (once; later calls do nothing)."""
        if getattr(self, "_thread", None) is None:
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            if self.interval_s:
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()
