"""`python -m bench.soak` (part of make bench): two agents on the local AWS through the fault proxy, one killed and
restarted at random moments, a few thousand images with ~1% bad ones. Counts what was lost, duplicated and
dead-lettered, and each agent's memory (RSS) at start and end.

The captioner is a stand-in (size and mean colour, a few ms per device batch): the soak is about the agent's
bookkeeping under faults, not the model. Every run is fresh: its own moto server, buckets and queues.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.soak_parts import Agent, make_images, png
from tools.fault_proxy import FaultProxy
from tools.local_aws import DEFAULT_REGION, MotoServer, aws_client, free_port
from tools.paths import REPO


def run(count: int, bad_share: float, seed: int, timeout_s: float, work: Path) -> dict:
    with MotoServer(work / "moto", free_port()) as server:
        s3, sqs = (aws_client(name, DEFAULT_REGION, server.endpoint_url) for name in ("s3", "sqs"))
        run_id = uuid.uuid4().hex[:8]
        images_bucket, artifacts = f"soak-images-{run_id}", f"soak-artifacts-{run_id}"
        for bucket in (images_bucket, artifacts):
            s3.create_bucket(Bucket=bucket)
        dlq = sqs.create_queue(QueueName=f"soak-dlq-{run_id}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue = sqs.create_queue(
            QueueName=f"soak-{run_id}",
            Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})},
        )["QueueUrl"]
        from runtime import registry

        artifact = work / "soak.pt2"
        artifact.write_text(json.dumps({"name": "soak"}))
        registry.publish(s3, artifacts, artifact, verify=False, model="soak")
        images = make_images(count, bad_share, seed)
        print(f"soak: uploading {len(images)} images", file=sys.stderr)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda item: s3.put_object(
                        Bucket=images_bucket, Key=item[0], Body=png(*item[1]) if isinstance(item[1], tuple) else item[1]
                    ),
                    images.items(),
                )
            )
        with FaultProxy(server.endpoint_url, error_rate=0.02, drop_rate=0.005, seed=seed) as proxy:
            env = {
                **os.environ,
                **server.env(),
                "AWS_ENDPOINT_URL": proxy.url,
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(REPO),
            }
            agents = []
            for name in ("a", "b"):
                config = work / f"agent-{name}.json"
                config.write_text(
                    json.dumps(
                        {
                            "queue_url": queue,
                            "artifacts_bucket": artifacts,
                            "images_bucket": images_bucket,
                            "batch_size": 8,
                            "batch_wait_s": 0.1,
                            "wait_time_s": 2,
                            "visibility_timeout_s": 20,
                            "retry_backoff_s": 1,
                            "pointer_poll_s": 0,
                            "imds_url": "",
                            "device": "cpu",
                            "drain_timeout_s": 40,
                            "cache_dir": str(work / f"cache-{name}"),
                            "captioner_loader": "bench.soak_parts:load_soak_captioner",
                        }
                    )
                )
                agents.append(Agent(name, config, env))
            for agent in agents:
                agent.start()
            keys = list(images)
            started = time.monotonic()
            for start in range(0, len(keys), 10):  # the S3 events, as the bucket notification would send them
                sqs.send_message_batch(
                    QueueUrl=queue,
                    Entries=[
                        {
                            "Id": str(i),
                            "MessageBody": json.dumps(
                                {
                                    "Records": [
                                        {
                                            "eventName": "ObjectCreated:Put",
                                            "s3": {"bucket": {"name": images_bucket}, "object": {"key": k}},
                                        }
                                    ]
                                }
                            ),
                        }
                        for i, k in enumerate(keys[start : start + 10])
                    ],
                )
            rng, kills, outages, sampled = random.Random(seed + 1), 0, 0, 0.0
            next_kill, next_outage = time.monotonic() + rng.uniform(5, 20), time.monotonic() + rng.uniform(10, 30)
            while True:
                attrs = sqs.get_queue_attributes(
                    QueueUrl=queue,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]
                if sum(int(v) for v in attrs.values()) == 0:
                    break
                if time.monotonic() - started > timeout_s:
                    print(f"soak: timed out with {attrs} left", file=sys.stderr)
                    break
                if time.monotonic() > next_kill:
                    agents[0].process.send_signal(signal.SIGKILL)
                    agents[0].process.wait(10)
                    kills += 1
                    agents[0].start()
                    next_kill = time.monotonic() + rng.uniform(10, 30)
                if time.monotonic() > next_outage:
                    proxy.outage(rng.uniform(2, 8))
                    outages += 1
                    next_outage = time.monotonic() + rng.uniform(20, 40)
                if time.monotonic() - sampled > 10:
                    sampled = time.monotonic()
                    for agent in agents:
                        agent.sample()
                time.sleep(1)
            elapsed = time.monotonic() - started
            for agent in agents:
                agent.rss_end_kib = agent.rss()
                agent.process.send_signal(signal.SIGTERM)
                agent.process.wait(60)
            faults = dict(proxy.counts)
        return _tally(s3, sqs, images_bucket, dlq, images, agents, faults, kills, outages, elapsed)


def _tally(s3, sqs, bucket, dlq, images, agents, faults, kills, outages, elapsed) -> dict:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="results/")
    written = [e["Key"] for page in pages for e in page.get("Contents", []) if "/_" not in e["Key"]]
    expected = {f"results/{key}.json": key for key in images}
    wrong = 0
    for result_key, key in expected.items():
        if result_key not in written:
            continue
        record = json.loads(s3.get_object(Bucket=bucket, Key=result_key)["Body"].read())
        value = images[key]
        if isinstance(value, tuple):
            (colour, (w, h)) = value
            wrong += record.get("caption") != f"soak: {w}x{h} {tuple(colour)}"
        else:
            wrong += record["status"] != "error"
    attempts = sum(line["images"] for agent in agents for line in agent.lines if line.get("event") == "batch")
    dead = int(
        sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
            "ApproximateNumberOfMessages"
        ]
    )
    return {
        "images": len(images),
        "bad_inputs": sum(not isinstance(v, tuple) for v in images.values()),
        "records": len(written),
        "lost": len(set(expected) - set(written)),
        "duplicated": len(written) - len(set(written)) + len(set(written) - set(expected)),
        "wrong_records": wrong,
        "dead_lettered": dead,
        "extra_attempts": attempts - len(images),
        "faults_injected": sum(n for k, n in faults.items() if not k.endswith("_calls")),
        "faults": faults,
        "agent_kills": kills,
        "outages": outages,
        "seconds": round(elapsed, 1),
        "agents": {
            agent.name: {
                "starts": agent.starts,
                "rss_start_kib": agent.rss_start_kib[0] if agent.rss_start_kib else None,
                "rss_last_start_kib": agent.rss_start_kib[-1] if agent.rss_start_kib else None,
                "rss_end_kib": agent.rss_end_kib,
                "rss_samples_images_kib": agent.rss_samples[:: max(1, len(agent.rss_samples) // 8)],
                "images_done": sum(line["images"] for line in agent.lines if line.get("event") == "batch"),
            }
            for agent in agents
        },
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--bad-share", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--timeout-s", type=float, default=1800)
    p.add_argument("--section", default="soak")
    p.add_argument("--results", default="bench/results.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="captionkit-soak-") as tmp:
        figures = run(args.images, args.bad_share, args.seed, args.timeout_s, Path(tmp))
    print(json.dumps(figures, indent=1))
    from bench.model import write_section

    write_section(Path(args.results), args.section, figures)
    return 0 if figures["lost"] == figures["duplicated"] == figures["wrong_records"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
