"""`python -m tools.redrive [--max N] [--by-hand]` (make redrive): after a fix, return dead-lettered messages to the
jobs queue and print how many moved.

On AWS this starts an SQS message move task (StartMessageMoveTask, then ListMessageMoveTasks until it ends:
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_StartMessageMoveTask.html). moto has no
message move tasks (it answers 500; tools/moto_gaps.py), so on the local AWS, or with --by-hand, each message is
received from the dead-letter queue, sent to the jobs queue with its body and attributes, and only then deleted
from the dead-letter queue: a crash in between leaves a copy in both, and the agent's results are idempotent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

COUNT = "ApproximateNumberOfMessages"


def _arn(sqs, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def depth(sqs, url: str) -> int:
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[COUNT])["Attributes"][COUNT])


def redrive_by_hand(sqs, dead_letters: str, queue: str, limit: int | None = None) -> dict:
    """Receive, send, then delete, ten at a time, until the dead-letter queue is empty or `limit` moved."""
    moved = failed = 0
    while limit is None or moved < limit:
        want = 10 if limit is None else max(1, min(10, limit - moved))
        messages = sqs.receive_message(
            QueueUrl=dead_letters,
            MaxNumberOfMessages=want,
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            break
        entries = [
            {
                "Id": str(i),
                "MessageBody": m["Body"],
                **({"MessageAttributes": m["MessageAttributes"]} if m.get("MessageAttributes") else {}),
            }
            for i, m in enumerate(messages)
        ]
        reply = sqs.send_message_batch(QueueUrl=queue, Entries=entries)
        sent = {entry["Id"] for entry in reply.get("Successful", [])}
        failed += len(messages) - len(sent)
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages) if str(i) in sent]
        if done:
            sqs.delete_message_batch(QueueUrl=dead_letters, Entries=done)
        moved += len(done)
        if failed:
            break  # sending fails: stop, the rest stay dead-lettered
    return {"moved": moved, "failed": failed, "left": depth(sqs, dead_letters), "how": "receive/send/delete"}


def redrive_with_move_task(sqs, dead_letters: str, queue: str, limit: int | None = None, poll_s: float = 5) -> dict:
    """An SQS message move task from the dead-letter queue to the jobs queue, waited for."""
    source = _arn(sqs, dead_letters)
    extra = {"MaxNumberOfMessagesPerSecond": max(1, limit)} if limit else {}
    sqs.start_message_move_task(SourceArn=source, DestinationArn=_arn(sqs, queue), **extra)
    while True:
        task = sqs.list_message_move_tasks(SourceArn=source, MaxResults=1)["Results"][0]
        if task["Status"] != "RUNNING":
            break
        time.sleep(poll_s)
    return {
        "moved": int(task.get("ApproximateNumberOfMessagesMoved", 0)),
        "failed": 0,
        "left": depth(sqs, dead_letters),
        "how": f"message move task ({task['Status']})",
        **({"reason": task["FailureReason"]} if task.get("FailureReason") else {}),
    }


def main(argv=None) -> int:
    from tools import target as targets
    from tools.local_aws import aws_client
    from tools.outputs import stack_outputs

    parser = argparse.ArgumentParser(prog="python -m tools.redrive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("local", "aws"), default=None)
    parser.add_argument("--max", type=int, default=None, help="move at most this many (by hand: exactly)")
    parser.add_argument("--by-hand", action="store_true", help="receive/send/delete even on AWS")
    args = parser.parse_args(argv)
    target = targets.resolve(args.target)
    outputs = stack_outputs(target.stack_name, target.region, target.endpoint_url)
    sqs = aws_client("sqs", target.region, target.endpoint_url)
    dead_letters, queue = outputs["DeadLetterQueueUrl"], outputs["QueueUrl"]
    before = depth(sqs, dead_letters)
    by_hand = args.by_hand or target.endpoint_url is not None  # moto: no message move tasks
    counts = (redrive_by_hand if by_hand else redrive_with_move_task)(sqs, dead_letters, queue, args.max)
    print(json.dumps({"dead_lettered_before": before, **counts}))
    return 0 if not counts["failed"] else 1


if __name__ == "__main__":
    from runtime.cli_errors import run

    sys.exit(run(main, None, "redrive"))
