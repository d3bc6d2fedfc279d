"""Run moto's server (local AWS) on localhost in the background, tracked by a pid file."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEFAULT_PORT = 5050


class MotoServerError(RuntimeError):
    """The local AWS server could not be started or stopped; the message says what to do."""


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


class MotoServer:
    """moto's server on `http://localhost:<port>` (moto needs the name localhost, not 127.0.0.1)."""

    def __init__(self, state_dir: Path, port: int = DEFAULT_PORT) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.pid_file = self.state_dir / "moto.pid"
        self.log_file = self.state_dir / "moto.log"
        self.endpoint_url = f"http://localhost:{port}"

    def start(self, timeout_s: float = 30) -> None:
        """Start the server in its own session and wait until it answers."""
        if self.running_pid() is not None:
            raise MotoServerError(f"local AWS already runs (pid file {self.pid_file}); stop it with "
                                  "`python -m tools.local down` first")
        with socket.socket() as sock:
            if sock.connect_ex(("localhost", self.port)) == 0:
                raise MotoServerError(f"port {self.port} is taken; pick another with --port")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "localhost", "-p", str(self.port)],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        self.pid_file.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise MotoServerError(f"moto server exited with {process.returncode}; see {self.log_file}")
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise MotoServerError(f"moto server did not answer on {self.endpoint_url} in {timeout_s} s; see {self.log_file}")

    def running_pid(self) -> int | None:
        """The pid from the pid file if that process is still a moto server, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        command = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True).stdout
        return pid if "moto.server" in command and _alive(pid) else None

    def stop(self, timeout_s: float = 10) -> bool:
        """Stop the server this pid file names (SIGTERM, then SIGKILL); True if one was running."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return pid is not None


def _alive(pid: int) -> bool:
    try:
        finished, _status = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
