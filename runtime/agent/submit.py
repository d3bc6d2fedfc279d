"""`python -m runtime submit`: queue a batch job over existing images (a prefix or a list of S3 URIs)."""
from __future__ import annotations

import argparse
import datetime
import json
import secrets
import sys

from runtime import aws
from runtime.agent.config import load_config
from runtime.agent.layout import job_root
from runtime.agent.messages import JOB_ID, JOB_TYPE, MAX_BODY_BYTES, parse_s3_uri
from runtime.agent.scope import Scope
from runtime.agent.wake import wake_quietly
from runtime.errors import CaptionKitError


def build_job(uris: list[str], job_id: str | None = None) -> dict:
    """The job message: one `prefix` (a URI ending in '/') or a list of image URIs. ValueError if neither."""
    job_id = job_id or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    if not JOB_ID.match(job_id):
        raise ValueError(f"job id {job_id!r}: use 1-128 letters, digits, '.', '_' or '-'")
    for uri in uris:
        parse_s3_uri(uri)
    if len(uris) == 1 and uris[0].endswith("/"):
        return {"type": JOB_TYPE, "job_id": job_id, "prefix": uris[0]}
    prefixes = [uri for uri in uris if uri.endswith("/")]
    if prefixes or not uris:
        raise ValueError("give either one prefix (s3://bucket/prefix/) or one or more image URIs, not both")
    return {"type": JOB_TYPE, "job_id": job_id, "images": uris}


def unreadable_by_workers(config, uris: list[str]) -> str | None:
    """Why the workers cannot read some of `uris`, or None. Their role may read only the images bucket's
    images prefix (stacks/worker_policy.py, ReadImages): anything else would end as error records."""
    if not config.images_bucket:
        return ("images_bucket is not set, so submit cannot check that the workers may read these images: "
                "set CAPTIONKIT_IMAGES_BUCKET (and CAPTIONKIT_IMAGES_PREFIX if not incoming/)")
    scope = Scope.of(config)
    outside = [uri for uri in uris if scope.outside(*parse_s3_uri(uri))]
    if outside:
        return (f"{len(outside)} of {len(uris)} URIs are outside s3://{config.images_bucket}/{config.images_prefix}, "
                f"the only place the workers may read (e.g. {outside[0]}); copy the images there and submit that")
    return None


def main(argv=None) -> int:
    """Send one job message to the agents' queue; prints the job id and where its summary will be."""
    parser = argparse.ArgumentParser(prog="python -m runtime submit", description=__doc__.split(":", 1)[1])
    parser.add_argument("uris", nargs="*", help="s3://bucket/prefix/ (ending in '/'), or image URIs")
    parser.add_argument("--from-file", help="a file of image URIs, one a line")
    parser.add_argument("--job-id", help="default: a time stamp and a random suffix")
    parser.add_argument("--config", help="the agent's JSON settings (queue_url, results bucket); env wins")
    args = parser.parse_args(argv)
    uris = list(args.uris)
    if args.from_file:
        with open(args.from_file) as lines:
            uris += [line.strip() for line in lines if line.strip()]
    try:
        config = load_config(args.config)
        config.require("queue_url")
        job = build_job(uris, args.job_id)
        refusal = unreadable_by_workers(config, uris)
    except (CaptionKitError, ValueError, OSError) as exc:
        print(f"submit: {exc}", file=sys.stderr)
        return 2
    if refusal:
        print(f"submit: refused, nothing queued: {refusal}", file=sys.stderr)
        return 2
    body = json.dumps(job)
    if len(body.encode()) > MAX_BODY_BYTES:
        print(f"submit: {len(job['images'])} URIs make a {len(body.encode()):,}-byte message, over the "
              f"{MAX_BODY_BYTES:,} the agents read; put the images under one prefix and submit that", file=sys.stderr)
        return 2
    aws.client("sqs", config.region).send_message(QueueUrl=config.queue_url, MessageBody=body)
    woke = {"wake": wake_quietly(aws.client("autoscaling", config.region), config.asg_name)} if config.asg_name else {}
    where = (f"s3://{config.results_bucket_name}/{job_root(config, job['job_id'])}summary.json"
             if config.results_bucket_name else f"<results bucket>/{job_root(config, job['job_id'])}summary.json")
    print(json.dumps({"job_id": job["job_id"], "summary": where, **woke}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
