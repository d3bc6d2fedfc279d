"""A finished job's one notice: the SNS message (counts in the subject, the summary's place in the body), sent once."""

from __future__ import annotations

import datetime
import json

from runtime import aws
from runtime.agent.config import AgentConfig
from runtime.agent.metrics import log
from runtime.agent.s3json import put_json

SUBJECT_LIMIT = 100  # SNS refuses longer subjects


def collect_command(job_id: str) -> str:
    """How to gather a job's captions into one file on a laptop (tools/collect.py)."""
    return f"make collect JOB={job_id} OUT={job_id}.jsonl"


def job_done_message(summary: dict, summary_uri: str) -> tuple[str, str]:
    """(subject, body): the counts in the subject, the summary's location and counts as JSON in the body."""
    subject = f"CaptionKit job {summary['job_id']} done: {summary['done']} captioned, {summary['failed']} failed"
    body = {
        "job_id": summary["job_id"],
        "summary": summary_uri,
        "images": summary["images"],
        "done": summary["done"],
        "failed": summary["failed"],
        "results": summary["results"],
        "collect": collect_command(summary["job_id"]),
    }
    if "shards" in summary:  # every job of the one engine: the summary's part counts and its own collect line
        if summary.get("kind") != "images":
            subject += f", {summary['shards_failed']} of {summary['shards']} shards failed"
        elif summary["shards_failed"]:  # a prefix or URI-list job's parts are no one's concern unless some failed
            subject += f", {summary['shards_failed']} of {summary['shards']} parts failed"
        body.update(
            {
                key: summary.get(key)
                for key in ("run", "shards", "shards_done", "shards_failed", "errors", "images_per_s", "collect")
            }
        )
    return subject[:SUBJECT_LIMIT], json.dumps(body, sort_keys=True)


def publish_job_done(topic_arn: str, region: str, summary: dict, summary_uri: str, sns=None) -> bool:
    """Publish the job's completion; a failure is logged, not raised (a replay would not publish again)."""
    subject, body = job_done_message(summary, summary_uri)
    try:
        (sns or aws.client("sns", region)).publish(TopicArn=topic_arn, Subject=subject, Message=body)
    except Exception as exc:  # noqa: BLE001 - the summary is written; a missed e-mail must not fail the part
        log(
            "error",
            event="job_notify_failed",
            job_id=summary["job_id"],
            topic=topic_arn,
            reason=f"{exc.__class__.__name__}: {exc}",
        )
        return False
    log("info", event="job_notified", job_id=summary["job_id"], topic=topic_arn)
    return True


def notify_once(
    s3, config: AgentConfig, notified_key: str, record: dict, summary: dict, summary_uri: str, sns=None
) -> bool:
    """Tell the job topic (if any) that `summary` is complete, once: of agents racing to finish, the one whose
    IfNoneMatch put of `notified_key` succeeds publishes; a replay finds the key and publishes nothing."""
    if not config.job_topic_arn:
        return False
    told = {**record, "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    if not put_json(s3, config.results_bucket_name, notified_key, told, only_new=True):
        return False
    return publish_job_done(config.job_topic_arn, config.region, summary, summary_uri, sns=sns)
