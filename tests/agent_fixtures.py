"""The agent tests' fixtures (conftest.py registers them): the session's moto server, a stack, logs, a fake IMDS."""

from __future__ import annotations

import logging
import os

import pytest

from agent_support import FakeIMDS, Stack
from tools.local_aws import MotoServer, aws_env, free_port


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory) -> str:
    """The URL of the one moto server of this test session (stopped at its end)."""
    with MotoServer(tmp_path_factory.mktemp("moto"), free_port()) as server:
        yield server.endpoint_url


@pytest.fixture
def aws(moto_server, monkeypatch) -> dict[str, str]:
    """Point boto3 (in this process) at moto; the env to hand to agent subprocesses."""
    env = aws_env(moto_server)
    for name in [name for name in list(os.environ) if name.startswith("CAPTIONKIT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def stack(aws, tmp_path) -> Stack:
    """Fresh buckets, queue and dead-letter queue (max 3 receives), with a fake model published."""
    created = Stack(aws["AWS_ENDPOINT_URL"], tmp_path)
    created.publish("fake-a")
    return created


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[dict] = []

    def emit(self, record):
        self.lines.append(getattr(record, "fields", {"event": record.getMessage()}))

    def events(self, name: str) -> list[dict]:
        return [line for line in list(self.lines) if line.get("event") == name]


@pytest.fixture
def agent_log():
    """The agent's log lines (dicts) emitted in this process during the test."""
    handler = _Collect()
    logger = logging.getLogger("captionkit.agent")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def imds():
    """A fake IMDSv2 on 127.0.0.1."""
    server = FakeIMDS()
    yield server
    server.close()


@pytest.fixture(scope="session")
def deployed_stack(tmp_path_factory):
    """(Target, outputs) of this app cdk-deployed to its own moto server, once per session (~30 s).

    For tests that read and write the stack's real resources without needing them empty; stopped at the end.
    """
    import json

    from tools import local
    from tools.paths import LOCAL_STATE
    from tools.target import Target

    state = tmp_path_factory.mktemp("deployed-stack")
    outputs = local.up(port=free_port(), state_dir=state)
    saved = json.loads((state / LOCAL_STATE.name).read_text())
    try:
        yield Target(saved["stack_name"], saved["region"], saved["endpoint_url"]), outputs
    finally:
        local.down(state_dir=state)
