"""`python -m bench.agent`: the agent against a naive worker, and against the model alone, on the local AWS (moto).

Same images, same weights, same machine, one after another in this run:
- naive worker: one message at a time, download, decode, HF processor + `generate` per image, write, delete;
- the agent (`python -m runtime agent --burst`, a subprocess): images/s from its `started` line to its exit;
- the pipeline alone: the agent's own receive, S3 reads, decoding and preprocessing with no model (bench.pipeline);
- the model alone: the same captioner on pre-decoded pixel batches (what the device could do without S3).
The agent's images/s is then set against the slower of the two alone, which bounds it. The agent and the pipeline
alone get the download/decode threads the boot would give them here (vCPUs per GPU, at least 2).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import PIL.Image

from bench.model import machine, write_section
from bench.pipeline import boot_threads, bound, pipeline_alone
from runtime.load_policy import BACKENDS, QUANTIZE_MODES


def jpeg_images(count: int, seed: int = 0) -> list[bytes]:
    """Smooth random 640x480 JPEGs (a camera-sized upload, so decoding and resizing cost what they do)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        buf = io.BytesIO()
        PIL.Image.fromarray(small).resize((640, 480), PIL.Image.BICUBIC).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


class LocalAws:
    """A bucket pair and a queue on a moto server started here (the same APIs the agent uses on AWS)."""

    def __init__(self, state_dir: Path):
        from tools.local_aws import DEFAULT_REGION, MotoServer, aws_client, free_port

        self.server = MotoServer(state_dir, free_port())
        self.server.start()
        self.env = self.server.env()
        os.environ.update(self.env)  # the cold-start measurements read the pointer through runtime.aws
        endpoint = self.server.endpoint_url
        self.s3, self.sqs = aws_client("s3", DEFAULT_REGION, endpoint), aws_client("sqs", DEFAULT_REGION, endpoint)
        self.id = uuid.uuid4().hex[:8]
        self.images, self.artifacts = f"images-{self.id}", f"artifacts-{self.id}"
        for bucket in (self.images, self.artifacts):
            self.s3.create_bucket(Bucket=bucket)

    def queue(self, name: str, keys: list[str]) -> str:
        url = self.sqs.create_queue(QueueName=f"{name}-{self.id}")["QueueUrl"]
        for start in range(0, len(keys), 10):
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": json.dumps(
                        {
                            "Records": [
                                {
                                    "eventSource": "aws:s3",
                                    "eventName": "ObjectCreated:Put",
                                    "s3": {"bucket": {"name": self.images}, "object": {"key": key}},
                                }
                            ]
                        }
                    ),
                }
                for i, key in enumerate(keys[start : start + 10])
            ]
            self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
        return url

    def stop(self):
        self.server.stop()


def naive_worker(aws: LocalAws, queue: str, folder: str, count: int) -> float:
    """One message at a time with HF (float32, its default settings); seconds for `count` images."""
    import torch

    from export.load import load

    loaded = load(folder, None, "float32")
    started = time.perf_counter()
    done = 0
    while done < count:
        for message in aws.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            record = json.loads(message["Body"])["Records"][0]["s3"]
            body = aws.s3.get_object(Bucket=record["bucket"]["name"], Key=record["object"]["key"])["Body"].read()
            image = PIL.Image.open(io.BytesIO(body)).convert("RGB")
            with torch.inference_mode():
                pixels = loaded.processor(images=[image], return_tensors="pt")["pixel_values"]
                ids = loaded.model.generate(pixel_values=pixels)
            caption = loaded.tokenizer.decode(ids[0], skip_special_tokens=True)
            aws.s3.put_object(
                Bucket=aws.images,
                Key=f"naive/{record['object']['key']}.json",
                Body=json.dumps({"caption": caption}).encode(),
            )
            aws.sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            done += 1
    return time.perf_counter() - started


def agent_run(aws: LocalAws, queue: str, artifact: Path, settings: dict, tmp: Path) -> dict:
    """The agent as a subprocess in burst mode; seconds from its `started` line to its exit."""
    from runtime.registry import publish

    publish(aws.s3, aws.artifacts, artifact)
    config = tmp / "agent.json"
    config.write_text(
        json.dumps(
            {
                "queue_url": queue,
                "artifacts_bucket": aws.artifacts,
                "images_bucket": aws.images,
                "pointer_poll_s": 0,
                "imds_url": "",
                "device": "cpu",
                "wait_time_s": 1,
                "cache_dir": str(tmp / "cache"),
                **settings,
            }
        )
    )
    seconds, lines = run_burst(config, {**os.environ, **aws.env})
    started = json.loads(next(line for line in lines if '"event": "started"' in line))
    return {"seconds": seconds, "start_s": started.get("start_s"), "backend": started.get("backend")}


def run_burst(config: Path, env: dict, watch=None) -> tuple[float, list[str]]:
    """`python -m runtime agent --burst` as a process: (seconds from its `started` line to its exit, its lines).
    `watch(pid)` is called once it runs (a memory sampler)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime", "agent", "--config", str(config), "--burst"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    if watch:
        watch(process.pid)
    started_at, lines = None, []
    for line in process.stdout:
        lines.append(line)
        if started_at is None and '"event": "started"' in line:
            started_at = time.perf_counter()
    process.wait()
    ended = time.perf_counter()
    if process.returncode != 0 or started_at is None:
        raise RuntimeError(f"agent exited with {process.returncode}:\n{''.join(lines[-30:])}")
    return ended - started_at, lines


def captions_agree(aws: LocalAws, keys: list[str]) -> int:
    """How many of the naive worker's captions (HF float32) the agent's results repeat exactly."""
    same = 0
    for key in keys:
        naive = json.loads(aws.s3.get_object(Bucket=aws.images, Key=f"naive/{key}.json")["Body"].read())
        ours = json.loads(aws.s3.get_object(Bucket=aws.images, Key=f"results/{key}.json")["Body"].read())
        same += naive["caption"] == ours.get("caption")
    return same


def model_alone(
    artifact: Path, images: list[bytes], batch: int, backend: str, cache: Path, quantize: str | None = None
) -> float:
    """The captioner on pre-decoded, preprocessed batches; seconds for all images."""
    from runtime.captioner import LoadOptions, load_captioner

    captioner = load_captioner(artifact, "cpu", LoadOptions(backend=backend, quantize=quantize), cache_dir=cache)
    pixels = captioner.preprocess([PIL.Image.open(io.BytesIO(b)).convert("RGB") for b in images])
    captioner.caption_pixels(pixels[:batch])  # warm-up, as the agent does
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        captioner.caption_pixels(pixels[start : start + batch])
    return time.perf_counter() - started


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.agent", description=__doc__)
    p.add_argument("--artifact", required=True, help="the .pt2 the agent serves")
    p.add_argument("--folder", required=True, help="the HF folder it was exported from (the naive worker's model)")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--naive-images", type=int, default=16, help="the naive worker is slow: a sample of the images")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--threads",
        type=int,
        default=boot_threads(),
        help="download/decode threads of the agent and the pipeline alone (default: as the boot sizes "
        "them on this machine, its vCPUs for one agent, at least 2)",
    )
    p.add_argument("--backend", default="exported", choices=BACKENDS)
    p.add_argument("--quantize", default=None, choices=QUANTIZE_MODES, help="the agent's CPU quantization")
    p.add_argument("--cache", default="/tmp/captionkit-bench/aoti-cache", help="compiled-package cache (aoti)")
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--section", default="agent")
    args = p.parse_args(argv)
    images = jpeg_images(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        aws = LocalAws(Path(tmp))
        try:
            keys = [f"incoming/img-{i:04d}.jpg" for i in range(len(images))]
            for key, body in zip(keys, images):
                aws.s3.put_object(Bucket=aws.images, Key=key, Body=body)
            before = machine()
            naive_s = naive_worker(aws, aws.queue("naive", keys[: args.naive_images]), args.folder, args.naive_images)
            settings = {
                "batch_size": args.batch_size,
                "backend": args.backend,
                "quantize": args.quantize or "",
                "prefetch_threads": args.threads,
            }
            if args.backend == "aoti":
                settings["cache_dir"] = args.cache
            agent = agent_run(aws, aws.queue("agent", keys), Path(args.artifact), settings, Path(tmp))
            agree = captions_agree(aws, keys[: args.naive_images])
            pipeline = pipeline_alone(
                aws.queue("pipeline", keys), aws.images, args.artifact, len(keys), args.batch_size, args.threads
            )
            alone_s = model_alone(
                Path(args.artifact), images, args.batch_size, args.backend, Path(args.cache), args.quantize
            )
        finally:
            aws.stop()
    rates = {
        "naive_images_per_s": args.naive_images / naive_s,
        "agent_images_per_s": len(images) / agent["seconds"],
        "model_alone_images_per_s": len(images) / alone_s,
        "pipeline_alone_images_per_s": pipeline.images_per_s,
    }
    slower = min(rates["pipeline_alone_images_per_s"], rates["model_alone_images_per_s"])
    section = {
        "artifact": args.artifact,
        "images": len(images),
        "naive_images": args.naive_images,
        "batch_size": args.batch_size,
        "prefetch_threads": pipeline.threads,
        "backend": agent["backend"],
        "quantize": args.quantize,
        "agent_start_s": agent["start_s"],
        "captions_equal_to_naive": agree,
        **{k: round(v, 3) for k, v in rates.items()},
        "agent_vs_naive": round(rates["agent_images_per_s"] / rates["naive_images_per_s"], 2),
        "agent_vs_model_alone": round(rates["agent_images_per_s"] / rates["model_alone_images_per_s"], 2),
        "bound": bound(rates["pipeline_alone_images_per_s"], rates["model_alone_images_per_s"]),
        "agent_vs_slower": round(rates["agent_images_per_s"] / slower, 2),
        "machine_before": before,
        "machine_after": machine(),
    }
    print(json.dumps(section, indent=1))
    write_section(Path(args.out), args.section, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
