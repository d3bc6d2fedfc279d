"""`make redrive` against moto: dead-lettered messages go back to the jobs queue, counted, and are then captioned."""

from __future__ import annotations

from agent_support import png
from tools.redrive import redrive_by_hand


def test_redrive_returns_dead_lettered_messages_to_the_queue_and_the_agent_captions_them(stack):
    config = stack.config(results_bucket=f"missing-{stack.id}")  # every result write fails: dead-lettered
    for n in range(3):
        stack.put(f"incoming/{n}.png", png((n * 50, 0, 0)))
        stack.send_event(f"incoming/{n}.png")
    stack.worker(config, burst=True).run()
    assert stack.counts(stack.dlq)["visible"] == 3

    counts = redrive_by_hand(stack.sqs, stack.dlq, stack.queue)  # the fix: the agent writes to the right bucket
    assert stack.worker(burst=True).run() == 0

    assert counts == {"moved": 3, "failed": 0, "left": 0, "how": "receive/send/delete"}
    assert [stack.result(f"incoming/{n}.png")["status"] for n in range(3)] == ["ok"] * 3
    assert stack.counts() == {"visible": 0, "in_flight": 0} and stack.counts(stack.dlq)["visible"] == 0
