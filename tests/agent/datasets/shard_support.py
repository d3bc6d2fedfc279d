"""Shards and job folders for the worker-side tests: webdataset tars, Parquet files, parts of keys, on moto."""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import random
import tarfile
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq

from agent_support import FakeCaptioner, png
from runtime.agent import ledger
from runtime.agent.layout import JOB_MANIFEST, job_root, part_key, run_root, shard_output
from runtime.agent.parts import output, run
from runtime.agent.work import Message, ShardRef, Work

RUN = "20250101T000000Z-abc123"
MAX_IMAGE_BYTES = 20_000
CORRUPT = b"\xff\xd8\xff not a jpeg at all"


def oversized() -> bytes:
    return random.Random(7).randbytes(MAX_IMAGE_BYTES + 1)


def expected(count: int) -> list[tuple[str, str | None]]:
    """(key, what the row holds) for `count` samples: every 10th corrupt, sample 3 without image, 5 oversized."""
    plan = []
    for n in range(count):
        kind = "corrupt" if n % 10 == 7 else "none" if n == 3 else "big" if n == 5 else "ok"
        plan.append((f"sample-{n:03d}", kind))
    return plan


def image_of(n: int, kind: str) -> bytes | None:
    return {
        "ok": png(colour=(n * 7 % 256, 90, 30), size=(20 + n % 5, 16)),
        "corrupt": CORRUPT,
        "big": oversized(),
        "none": None,
    }[kind]


def make_tar(plan) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for n, (key, kind) in enumerate(plan):
            members = [(f"{key}.txt", f"text {n}".encode())]
            data = image_of(n, kind)
            if data is not None:
                members.insert(0, (f"{key}.{'png' if kind == 'ok' else 'jpg'}", data))
            for name, body in members:
                info = tarfile.TarInfo(name)
                info.size = len(body)
                archive.addfile(info, io.BytesIO(body))
    return out.getvalue()


def make_parquet(plan) -> bytes:
    table = pa.table(
        {
            "key": [key for key, _ in plan],
            "image": pa.array([image_of(n, kind) for n, (_, kind) in enumerate(plan)], pa.binary()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=7)
    return sink.getvalue()


def put_job(stack, job_id: str, shards: list[dict], kind: str = "shards", **extra) -> str:
    """The job folder an expanding agent writes: manifest.json and the run's queued.json. Returns its root."""
    config = stack.config()
    root = job_root(config, job_id)
    manifest = {
        "job_id": job_id,
        "kind": kind,
        "source": f"s3://{stack.images}/incoming/",
        "created_at": "2025-01-01T00:00:00+00:00",
        "chunks": len(shards),
        "shards": shards,
        "image_column": None,
        "key_column": None,
        "images": None,
        **extra,
    }
    stack.s3.put_object(Bucket=stack.images, Key=root + JOB_MANIFEST, Body=json.dumps(manifest).encode())
    queued = {
        "run": RUN,
        "created_at": "2025-01-01T00:00:00+00:00",
        "reason": "submit",
        "indexes": list(range(len(shards))),
    }
    stack.s3.put_object(Bucket=stack.images, Key=run_root(root, RUN) + "queued.json", Body=json.dumps(queued).encode())
    return root


def put_shard(stack, key: str, data: bytes, fmt: str) -> dict:
    stack.put(key, data)
    return {"uri": f"s3://{stack.images}/{key}", "format": fmt, "size": len(data)}


def put_keys_part(stack, job_id: str, index: int, plan, missing: int | None = None) -> dict:
    """Each sample as its own image object (and one `missing` URI never uploaded); the part file listing them."""
    root, uris = job_root(stack.config(), job_id), []
    for n, (key, kind) in enumerate(plan):
        uri_key = f"incoming/listed/{key}.png"
        data = image_of(n, kind)
        if data is not None and n != missing:
            stack.put(uri_key, data)
        uris.append(f"s3://{stack.images}/{uri_key}")
    body = json.dumps({"source": f"s3://{stack.images}/keys.csv", "index": index, "images": uris}).encode()
    stack.s3.put_object(Bucket=stack.images, Key=part_key(root, index), Body=body)
    return {"uri": f"s3://{stack.images}/{part_key(root, index)}", "format": "keys", "size": len(uris)}


def shard_message(job_id: str, index: int, count: int, receive_count: int = 1) -> tuple[Message, Work]:
    body = json.dumps({"type": "captionkit.shard", "job_id": job_id, "index": index, "count": count, "run": RUN})
    message = Message(f"m-{index}", "receipt", body, receive_count, time.time(), time.monotonic() + 30)
    return message, Work(shard=ShardRef(job_id, index, count, RUN))


def context(stack, config=None, model=None, **overrides) -> run.ShardContext:
    config = config or stack.config(max_image_bytes=MAX_IMAGE_BYTES)
    fields = {"on_device": lambda _uris: contextlib.nullcontext(), "stopping": threading.Event()}
    fields.update(overrides)
    return run.ShardContext(
        stack.s3,
        config,
        model or FakeCaptioner("fake-a", "0" * 64, max_batch=4),
        ledger.Manifests(),
        concurrent.futures.ThreadPoolExecutor(4),
        **fields,
    )


def output_table(stack, job_id: str, index: int):
    key = shard_output(job_root(stack.config(), job_id), index)
    return output.read(stack.s3.get_object(Bucket=stack.images, Key=key)["Body"].read())


def output_bytes(stack, job_id: str, index: int) -> bytes:
    key = shard_output(job_root(stack.config(), job_id), index)
    return stack.s3.get_object(Bucket=stack.images, Key=key)["Body"].read()


def marker(stack, job_id: str, index: int) -> dict | None:
    from runtime.agent.layout import part_marker

    return ledger.get_json(stack.s3, stack.images, part_marker(job_root(stack.config(), job_id), index))
