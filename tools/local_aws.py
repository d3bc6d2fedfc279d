"""The one local AWS harness: moto's server on localhost, a free port, and the environment and clients aimed at it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3

from runtime.errors import CaptionKitError

DEFAULT_PORT = 5050
DEFAULT_REGION = "us-east-1"
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # moto ignores them


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def aws_env(endpoint_url: str, region: str = DEFAULT_REGION) -> dict[str, str]:
    """The AWS_* variables that point boto3, the aws CLI and the cdk CLI at `endpoint_url` and nowhere else."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
        "AWS_SESSION_TOKEN": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def child_env(endpoint_url: str, region: str = DEFAULT_REGION) -> dict[str, str]:
    """This process's environment for a child aimed at `endpoint_url`: no profile, no real credentials."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_DEFAULT_"))}
    return {**inherited, **aws_env(endpoint_url, region)}


def aws_client(service: str, region: str, endpoint_url: str | None = None):
    """A boto3 client: the caller's credentials on AWS (`endpoint_url` None), dummy ones for a local endpoint."""
    if endpoint_url is None:
        return boto3.client(service, region_name=region)
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url, **DUMMY_CREDENTIALS)


class MotoServerError(CaptionKitError, RuntimeError):
    """The local AWS server could not be started or stopped; the message says what to do."""


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
            raise MotoServerError(
                f"local AWS already runs (pid file {self.pid_file}); stop it with `python -m tools.local down` first"
            )
        with socket.socket() as sock:
            if sock.connect_ex(("localhost", self.port)) == 0:
                raise MotoServerError(f"port {self.port} is taken; pick another with --port")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "localhost", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
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
        raise MotoServerError(
            f"moto server did not answer on {self.endpoint_url} in {timeout_s} s; see {self.log_file}"
        )

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def env(self, region: str = DEFAULT_REGION) -> dict[str, str]:
        """`aws_env` for this server."""
        return aws_env(self.endpoint_url, region)

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
