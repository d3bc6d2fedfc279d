"""Shards, queue bodies and job messages for the planning tests (test_plan, test_plan_resubmit, test_plan_submit)."""

from __future__ import annotations

import io
import json
import tarfile
import types

import pyarrow as pa
import pyarrow.parquet as pq

from runtime.agent.messages import parse_body
from runtime.agent.scope import Scope

MODEL = types.SimpleNamespace(name="fake-a", sha256="a" * 64)


def tar_shard(*keys: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for key in keys:
            for suffix, body in ((".jpg", b"\xff\xd8 not decoded here"), (".txt", b"a caption")):
                info = tarfile.TarInfo(key + suffix)
                info.size = len(body)
                archive.addfile(info, io.BytesIO(body))
    return out.getvalue()


def parquet_shard(**columns) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table(columns or {"image": [b"x", b"y"], "key": ["a", "b"]}), out)
    return out.getvalue()


def drain(stack) -> list[dict]:
    bodies = []
    while batch := stack.sqs.receive_message(QueueUrl=stack.queue, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(m["Body"]) for m in batch]
        stack.sqs.delete_message_batch(
            QueueUrl=stack.queue,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )
    return sorted(bodies, key=lambda body: body["index"])


def job_of(stack, config, body: dict) -> dict:
    return parse_body(
        json.dumps({"type": "captionkit.job", "job_id": "job-1", "run": "run-1", **body}), Scope.of(config)
    ).job


def get_json(stack, key: str):
    return json.loads(stack.s3.get_object(Bucket=stack.images, Key=key)["Body"].read())


def put_shards(stack, count=3, prefix="incoming/set/"):
    for n in range(count):
        stack.put(f"{prefix}{n:03d}.tar", tar_shard(f"s{n}-a", f"s{n}-b"))
