"""Settling held messages, counted: delete the finished, send back the retried with backoff, dead-letter the refused."""

from __future__ import annotations

from runtime.agent.metrics import Counters, log
from runtime.agent.queue import Inbox
from runtime.agent.work import Message

MAX_BACKOFF_S = 900  # a retried message waits `retry_backoff_s` doubled per receive, at most this
DONE, RETRY, REFUSE, RELEASE = "done", "retry", "refuse", "release"  # a handler's verdict on its message


class Settle:
    """What the batch, expansion and shard handlers do with a message once they know its fate."""

    def __init__(self, inbox: Inbox, counters: Counters, retry_backoff_s: float):
        self.inbox, self.counters, self.retry_backoff_s = inbox, counters, retry_backoff_s

    def apply(self, message: Message, action: str, reason: str = "") -> None:
        """Settle `message` as its handler decided: DONE delete it, RETRY send it back after a delay, REFUSE
        dead-letter it, RELEASE make it visible again at once."""
        if action == DONE:
            self.done([message])
        elif action == REFUSE:
            self.dead_letter(message, reason)
        elif action == RELEASE:
            self.release([message])
        else:
            self.retry([message], reason)

    def done(self, messages: list[Message]) -> None:
        """Delete messages whose results (or error records) are written."""
        self.inbox.delete(messages)

    def release(self, messages: list[Message]) -> None:
        """Visible again at once, unstarted (the worker is stopping): no receive is spent on them."""
        self.inbox.release(messages)

    def retry(self, messages: list[Message], reason: str) -> None:
        """Send messages back after a delay that doubles per receive (a transient failure)."""
        for message in messages:
            delay = min(self.retry_backoff_s * 2 ** (message.receive_count - 1), MAX_BACKOFF_S)
            log(
                "warning",
                event="retry",
                message_id=message.id,
                receive_count=message.receive_count,
                delay_s=delay,
                reason=reason,
            )
            self.inbox.release([message], delay)
        self.counters.retried += len(messages)

    def dead_letter(self, message: Message, reason: str) -> None:
        """Move a message no agent can act on to the dead-letter queue, alone; if that fails, retry it alone."""
        try:
            self.inbox.dead_letter(message, reason)
        except Exception as exc:  # noqa: BLE001 - the DLQ is unreachable: only this message waits, not its batch
            self.retry([message], f"{reason}; dead-lettering it failed: {exc.__class__.__name__}: {exc}")
            return
        self.counters.refused += 1

    def held(self, messages: list[Message]) -> list[Message]:
        """Those of `messages` this agent still holds (not settled yet)."""
        held = self.inbox.held()
        return [m for m in messages if m in held]
