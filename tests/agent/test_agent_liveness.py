"""Liveness: held messages stop being extended past the hold limit; systemd's watchdog is petted only on progress."""

from __future__ import annotations

import socket
import time

from runtime.agent.queue import Inbox, Message
from runtime.agent.watchdog import Watchdog, sd_notify


class _RecordingSQS:
    """Only records ChangeMessageVisibilityBatch calls (a small unit test; the flow tests use moto)."""

    def __init__(self):
        self.extended: list[str] = []

    def change_message_visibility_batch(self, QueueUrl, Entries):
        self.extended += [entry["ReceiptHandle"] for entry in Entries]
        return {}


def _held(inbox: Inbox, name: str, held_for_s: float) -> Message:
    now = time.monotonic()
    message = Message(name, f"receipt-{name}", "{}", 1, time.time(), deadline=now, held_since=now - held_for_s)
    inbox._held[name] = message
    return message


def test_a_message_held_past_the_hold_limit_is_no_longer_extended(agent_log):
    sqs = _RecordingSQS()
    inbox = Inbox(sqs, "queue-url", visibility_timeout_s=30, hold_limit_s=60)
    _held(inbox, "fresh", held_for_s=5)
    stuck = _held(inbox, "stuck", held_for_s=61)  # a device call that never returned

    inbox.extend_due()
    for message in inbox.held():
        message.deadline = time.monotonic()  # both due again
    inbox.extend_due()

    assert sqs.extended == ["receipt-fresh", "receipt-fresh"] and stuck.lapsed
    assert [line["message_id"] for line in agent_log.events("hold_limit_passed")] == ["stuck"]  # logged once


def test_a_message_whose_work_progresses_is_renewed_and_kept_past_the_hold_limit(agent_log):
    sqs = _RecordingSQS()
    inbox = Inbox(sqs, "queue-url", visibility_timeout_s=30, hold_limit_s=60)
    planning = _held(inbox, "planning", held_for_s=59)  # a manifest still being read, progress reported
    inbox.renew(planning)
    planning.held_since -= 30  # 89 s since it was received, 30 s since the last progress
    inbox.extend_due()
    assert sqs.extended == ["receipt-planning"] and not planning.lapsed
    assert agent_log.events("hold_limit_passed") == []


def _notify_socket(tmp_path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    server.bind(path)
    server.settimeout(2)
    return server, path


def test_sd_notify_writes_one_datagram_to_the_notify_socket(tmp_path):
    server, path = _notify_socket(tmp_path)
    with server:
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": path})
        assert server.recv(100) == b"READY=1"
    assert not sd_notify("READY=1", {})  # not under systemd: nothing to do


def test_the_watchdog_is_petted_during_progress_and_starved_by_a_hung_device_call(tmp_path, agent_log):
    server, path = _notify_socket(tmp_path)
    environ = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"}
    watchdog = Watchdog(hold_limit_s=0.5, environ=environ)
    with server:
        assert abs(watchdog.interval_s - 0.1) < 1e-9 and watchdog.beat()  # start-up: always alive
        watchdog.ready()
        assert server.recv(100) == b"WATCHDOG=1" and server.recv(100) == b"READY=1"
        with watchdog.device_call():
            assert watchdog.beat() and server.recv(100) == b"WATCHDOG=1"
            time.sleep(0.6)  # the call runs past the hold limit: hung
            assert not watchdog.beat() and not watchdog.beat()
        assert watchdog.beat()  # it returned: progress again
    assert len(agent_log.events("watchdog_starved")) == 1
    assert Watchdog(1, {"WATCHDOG_USEC": "300000", "WATCHDOG_PID": "1"}).interval_s == 0  # meant for another pid
