"""The SQS side: receive, settle (delete / release), and keep the visibility of held messages alive."""

from __future__ import annotations

import json
import threading
import time

from runtime.agent.metrics import log
from runtime.agent.work import Message

SEND_BATCH = 10  # messages per SendMessageBatch, the most SQS takes
COUNT_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


class Inbox:
    """Receives messages, remembers which ones this agent holds, and settles each exactly once."""

    def __init__(self, sqs, queue_url: str, visibility_timeout_s: int, hold_limit_s: float = float("inf")):
        self.sqs, self.url, self.visibility_timeout_s = sqs, queue_url, int(visibility_timeout_s)
        self.hold_limit_s = hold_limit_s  # past it a message is not extended: a hung device cannot hold it for 12 h
        self._held: dict[str, Message] = {}
        self._dlq: tuple[str, str] | None = None
        self._lock = threading.RLock()  # settling and extending never interleave on a message
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._extend_forever, name="visibility", daemon=True)

    def receive(self, max_messages: int, wait_s: float) -> list[Message]:
        """One ReceiveMessage call (long poll up to `wait_s`); the messages become held."""
        reply = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(10, max_messages)),
            WaitTimeSeconds=int(min(max(wait_s, 0), 20)),
            VisibilityTimeout=self.visibility_timeout_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        now = time.monotonic()
        messages = [
            Message(
                m["MessageId"],
                m["ReceiptHandle"],
                m["Body"],
                int(m["Attributes"]["ApproximateReceiveCount"]),
                int(m["Attributes"]["SentTimestamp"]) / 1000,
                now + self.visibility_timeout_s,
            )
            for m in reply.get("Messages", [])
        ]
        with self._lock:
            self._held.update((m.id, m) for m in messages)
        return messages

    def renew(self, message: Message) -> None:
        """The holder is making progress on `message` (a long expansion): its hold limit counts from now."""
        with self._lock:
            if not message.lapsed:
                message.held_since = time.monotonic()

    def held(self) -> list[Message]:
        with self._lock:
            return list(self._held.values())

    def delete(self, messages: list[Message]) -> None:
        """Delete settled messages (their results are written)."""
        self._settle(messages, "delete_message_batch", lambda m: {})

    def release(self, messages: list[Message], delay_s: float = 0) -> None:
        """Make messages visible again after `delay_s` (0: at once) for another agent or attempt."""
        delay = int(min(max(delay_s, 0), 43_000))
        self._settle(messages, "change_message_visibility_batch", lambda m: {"VisibilityTimeout": delay})

    def _settle(self, messages: list[Message], call: str, extra) -> None:
        with self._lock:
            for m in messages:
                self._held.pop(m.id, None)
            for start in range(0, len(messages), 10):
                entries = [
                    {"Id": str(i), "ReceiptHandle": m.receipt, **extra(m)}
                    for i, m in enumerate(messages[start : start + 10])
                ]
                try:
                    failed = getattr(self.sqs, call)(QueueUrl=self.url, Entries=entries).get("Failed", [])
                except Exception as exc:  # noqa: BLE001 - the message simply comes back later
                    failed = [{"Id": e["Id"], "Message": str(exc)} for e in entries]
                for failure in failed:
                    log("error", event="settle_failed", call=call, reason=failure.get("Message", ""))

    def extend_due(self) -> int:
        """Extend every held message whose visibility has less than half its timeout left, unless it was held
        past `hold_limit_s` (then it lapses: visible again for another worker, and the watchdog ends this one)."""
        with self._lock:
            now = time.monotonic()
            for m in self._held.values():
                if not m.lapsed and now - m.held_since > self.hold_limit_s:
                    m.lapsed = True
                    log(
                        "error",
                        event="hold_limit_passed",
                        message_id=m.id,
                        hold_limit_s=self.hold_limit_s,
                        held_s=round(now - m.held_since, 1),
                        reason="no progress: its visibility is left to lapse",
                    )
            due = [m for m in self._held.values() if not m.lapsed and m.deadline - now < self.visibility_timeout_s / 2]
            for start in range(0, len(due), 10):
                part = due[start : start + 10]
                entries = [
                    {"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": self.visibility_timeout_s}
                    for i, m in enumerate(part)
                ]
                try:
                    self.sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
                except Exception as exc:  # noqa: BLE001 - try again on the next beat
                    log("error", event="extend_failed", reason=str(exc), messages=len(part))
                    continue
                for m in part:
                    m.deadline = now + self.visibility_timeout_s
            return len(due)

    def _extend_forever(self) -> None:
        while not self._stop.wait(max(0.2, self.visibility_timeout_s / 6)):
            self.extend_due()

    def start(self) -> None:
        self._heartbeat.start()

    def stop(self) -> None:
        self._stop.set()

    def is_empty(self) -> bool:
        """True when the queue holds no message at all: visible, in flight or delayed."""
        attrs = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=COUNT_ATTRIBUTES)["Attributes"]
        return all(int(attrs.get(name, 0)) == 0 for name in COUNT_ATTRIBUTES)

    def dead_letter(self, message: Message, reason: str) -> None:
        """Move a message no agent can act on to the dead-letter queue at once (or drop it, logged, if none)."""
        target, url = self._dead_letter_queue()
        if url:
            self.sqs.send_message(
                QueueUrl=url,
                MessageBody=message.body,
                MessageAttributes={"captionkit_error": {"DataType": "String", "StringValue": reason[:1000]}},
            )
        log(
            "error",
            event="unknown_message",
            message_id=message.id,
            reason=reason,
            moved_to=target or "nowhere: the queue has no dead-letter queue",
            body=message.body[:500],
        )
        self.delete([message])

    def _dead_letter_queue(self) -> tuple[str, str]:
        """(ARN, URL) of the queue's dead-letter queue from its redrive policy, or ('', '')."""
        if self._dlq is None:
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["RedrivePolicy"])["Attributes"]
            arn = json.loads(attrs.get("RedrivePolicy", "{}")).get("deadLetterTargetArn", "")
            url = ""
            if arn:
                _, _, _, _, account, name = arn.split(":", 5)
                url = self.sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            self._dlq = (arn, url)
        return self._dlq


def send_all(sqs, queue_url: str, bodies: list[str], what: str) -> None:
    """Send `bodies` in batches of SEND_BATCH; RuntimeError naming `what` (say "chunks of job x") if any is refused.

    A job's expansion sends its part messages this way; a resend after a crash sends the same bodies again.
    """
    for start in range(0, len(bodies), SEND_BATCH):
        reply = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + SEND_BATCH])],
        )
        if reply.get("Failed"):
            raise RuntimeError(f"sending {what} failed: {reply['Failed'][:3]}")
