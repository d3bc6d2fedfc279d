"""Job completion on SNS: one message per job, naming its summary; best effort (the summary is the record)."""
from __future__ import annotations

import json

from runtime.agent import aws
from runtime.agent.metrics import log

SUBJECT_LIMIT = 100  # SNS refuses longer subjects


def collect_command(job_id: str) -> str:
    """How to gather a job's captions into one file on a laptop (tools/collect.py)."""
    return f"make collect JOB={job_id} OUT={job_id}.jsonl"


def job_done_message(summary: dict, summary_uri: str) -> tuple[str, str]:
    """(subject, body): the counts in the subject, the summary's location and counts as JSON in the body."""
    subject = f"CaptionKit job {summary['job_id']} done: {summary['done']} captioned, {summary['failed']} failed"
    body = {"job_id": summary["job_id"], "summary": summary_uri, "images": summary["images"],
            "done": summary["done"], "failed": summary["failed"], "results": summary["results"],
            "collect": collect_command(summary["job_id"])}
    return subject[:SUBJECT_LIMIT], json.dumps(body, sort_keys=True)


def publish_job_done(topic_arn: str, region: str, summary: dict, summary_uri: str, sns=None) -> bool:
    """Publish the job's completion; a failure is logged, not raised (a replay would not publish again)."""
    subject, body = job_done_message(summary, summary_uri)
    try:
        (sns or aws.client("sns", region)).publish(TopicArn=topic_arn, Subject=subject, Message=body)
    except Exception as exc:  # noqa: BLE001 - the summary is written; a missed e-mail must not fail the chunk
        log("error", event="job_notify_failed", job_id=summary["job_id"], topic=topic_arn,
            reason=f"{exc.__class__.__name__}: {exc}")
        return False
    log("info", event="job_notified", job_id=summary["job_id"], topic=topic_arn)
    return True
