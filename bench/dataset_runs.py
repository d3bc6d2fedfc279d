"""The three paths of bench.datasets, run one after another on one local AWS behind one counting proxy."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.dataset_data import Memory, diff, images, parquet_shard, request_cost, tar_shard


class Local:
    """moto on localhost, the counting proxy in front of it, the buckets and queue of one run."""

    def __init__(self, tmp: Path):
        from tools.fault_proxy import FaultProxy
        from tools.local_aws import DEFAULT_REGION, MotoServer, aws_client, free_port

        self.server = MotoServer(tmp / "moto", free_port())
        self.server.start()
        self.proxy = FaultProxy(self.server.endpoint_url, error_rate=0.0, drop_rate=0.0)
        self.proxy.__enter__()
        self.env = {**os.environ, **self.server.env()}
        self.env["AWS_ENDPOINT_URL"] = self.proxy.url  # every client of the agent and the tools goes through it
        direct = self.server.endpoint_url
        self.s3 = aws_client("s3", DEFAULT_REGION, direct)  # set-up traffic is not counted
        self.sqs = aws_client("sqs", DEFAULT_REGION, direct)
        self.region = DEFAULT_REGION
        run = uuid.uuid4().hex[:8]
        self.images, self.artifacts = f"images-{run}", f"artifacts-{run}"
        for bucket in (self.images, self.artifacts):
            self.s3.create_bucket(Bucket=bucket)
        self.queue_url = self.sqs.create_queue(QueueName=f"jobs-{run}")["QueueUrl"]

    def put_all(self, objects: dict[str, bytes]) -> None:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda kv: self.s3.put_object(Bucket=self.images, Key=kv[0], Body=kv[1]), objects.items()))

    def stop(self):
        self.proxy.__exit__(None, None, None)
        self.server.stop()


def agent_config(local: Local, tmp: Path, batch_size: int) -> Path:
    config = tmp / "agent.json"
    config.write_text(
        json.dumps(
            {
                "queue_url": local.queue_url,
                "artifacts_bucket": local.artifacts,
                "images_bucket": local.images,
                "region": local.region,
                "dataset_sources": [f"s3://{local.images}/datasets/"],
                "pointer_poll_s": 0,
                "imds_url": "",
                "device": "cpu",
                "wait_time_s": 1,
                "batch_size": batch_size,
                "cache_dir": str(tmp / "cache"),
            }
        )
    )
    return config


def run_agent(local: Local, config: Path) -> dict:
    """`python -m runtime agent --burst` as a process; seconds from its `started` line to its exit, memory."""
    from bench.agent import run_burst

    memories = []
    seconds, lines = run_burst(config, local.env, watch=lambda pid: memories.append(Memory(pid)))
    memory = memories[0]
    memory.join()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return {"seconds": seconds, "memory": memory.summary(), "events": events}


def submit(local: Local, config: Path, argv: list[str]) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "submit", "--config", str(config), *argv],
        capture_output=True,
        text=True,
        env=local.env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"submit {argv} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - started


COLLECT = """
import json, os, sys
from pathlib import Path
from tools import collect, collect_shards
from tools.job_folder import JobReader, parquet_output
from tools.local_aws import aws_client
bucket, job, out = sys.argv[1:4]
s3 = aws_client("s3", os.environ["AWS_REGION"], os.environ["AWS_ENDPOINT_URL"])
reader = JobReader.for_job(s3, bucket, "results/", job)
manifest = reader.read_manifest()
if parquet_output(manifest):
    collect_shards.main(reader, manifest, Path(out), "parquet", list_only=False)
else:
    print(json.dumps(collect.collect_job(s3, job, Path(out), "parquet", results_bucket=bucket,
                                         results_prefix="results/")))
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))  # ru_maxrss survives exec
print(json.dumps({"peak_rss_mib": round(int(hwm.split()[1]) / 1024, 1)}))
"""


def run_collect(local: Local, job: str, out: Path) -> dict:
    """`collect` of a job into Parquet, as a process; its own peak RSS, rows and seconds."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", COLLECT, local.images, job, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**local.env, "AWS_REGION": local.region},
    )
    memory = Memory(process.pid, every=0.05)
    stdout, stderr = process.communicate()
    memory.join()
    if process.returncode != 0:
        raise RuntimeError(f"collect of {job} failed: {stderr[-2000:]}")
    import pyarrow.parquet as pq

    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "rows": pq.ParquetFile(out).metadata.num_rows,
        "peak_rss_mib": lines[-1]["peak_rss_mib"],
        "rss": memory.summary(),
    }


def run_all(args, tmp: Path) -> dict:
    from bench import models
    from bench.model import export_artifact
    from runtime.registry import publish

    artifact = (
        Path(args.artifact)
        if args.artifact
        else export_artifact(
            models.checkpoint("tiny", tmp / "checkpoints"), tmp / "tiny.pt2", "float32", args.batch_size
        )
    )
    pictures = images(args.shards * args.per_shard)
    shards = [pictures[i * args.per_shard : (i + 1) * args.per_shard] for i in range(args.shards)]
    local = Local(tmp)
    try:
        publish(local.s3, local.artifacts, artifact)
        local.put_all({f"incoming/flat/{key}.jpg": data for key, data in pictures})
        local.put_all(
            {
                f"datasets/wds/shard-{i:06d}.tar": tar_shard(s, no_image=f"{i:06d}-noimage" if i % 10 == 0 else None)
                for i, s in enumerate(shards)
            }
        )
        local.put_all({f"datasets/hf/shard-{i:06d}.parquet": parquet_shard(s) for i, s in enumerate(shards)})
        config = agent_config(local, tmp, args.batch_size)
        paths = {
            "per_image": ["s3://{b}/incoming/flat/", "--job-id", "flat"],
            "webdataset": ["--shards", "s3://{b}/datasets/wds/", "--job-id", "wds"],
            "parquet": ["--shards", "s3://{b}/datasets/hf/", "--job-id", "hf"],
        }
        results = {}
        for name, argv in paths.items():
            argv = [a.format(b=local.images) for a in argv]
            before = dict(local.proxy.operations)
            submitted, submit_s = submit(local, config, argv)
            agent = run_agent(local, config)
            expanded = next(e for e in agent["events"] if e.get("event") == "job_expanded")
            summary = json.loads(
                local.s3.get_object(Bucket=local.images, Key=f"results/_jobs/{submitted['job_id']}/summary.json")[
                    "Body"
                ].read()
            )
            ops = diff(dict(local.proxy.operations), before)
            middle = dict(local.proxy.operations)
            collected = run_collect(local, submitted["job_id"], tmp / f"{name}.parquet")
            collect_ops = diff(dict(local.proxy.operations), middle)
            everything = diff(dict(local.proxy.operations), before)
            results[name] = {
                "submit_s": round(submit_s, 2),
                "expand_s": expanded["seconds"],
                "planning_s": round(submit_s + expanded["seconds"], 2),
                "messages_planned": expanded.get("queued", expanded.get("chunks")),
                "agent_s": round(agent["seconds"], 2),
                "summary": {k: summary.get(k) for k in ("images", "done", "failed", "shards_done", "shards_failed")},
                "collect": collected,
                "images": len(pictures),
                "images_per_s": round(len(pictures) / agent["seconds"], 1),
                "agent_memory": agent["memory"],
                "job": submitted.get("job_id"),
                "captioning": {**request_cost(ops, len(pictures)), "operations": ops},
                "collecting": {**request_cost(collect_ops, len(pictures)), "operations": collect_ops},
                "both": request_cost(everything, len(pictures)),
            }
        return {"shards": args.shards, "per_shard": args.per_shard, "artifact": str(artifact), "paths": results}
    finally:
        local.stop()
