"""Helpers for the agent tests: a fresh stack per test on the session's moto server, a fake captioner, a fake IMDS."""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import PIL.Image

from runtime.errors import ArtifactError
from tools.paths import REPO


def png(colour=(200, 30, 30), size=(24, 16), fmt="PNG") -> bytes:
    out = io.BytesIO()
    PIL.Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


# --- a fake captioner with the runtime.captioner interface --------------------------------------


class FakeCaptioner:
    """Captions an image by its size and mean colour; `delay_s` per device batch makes it slow."""

    def __init__(
        self,
        name: str,
        sha256: str,
        delay_s: float = 0.0,
        max_batch: int = 8,
        started_file: str = "",
        abort_on: tuple[int, int] | None = None,
        **_,
    ):
        self.name, self.sha256, self.delay_s, self.max_batch = name, sha256, delay_s, max_batch
        self.abort_on = tuple(abort_on) if abort_on else None  # an image of this size kills the process
        self.started_file = started_file  # a line is appended here as each device batch starts
        self.device, self.manifest = "cpu", {"schema": "fake", "model": name}
        self.captioned: list[str] = []

    def preprocess(self, images):
        return [(image.size, tuple(int(v) for v in image.resize((1, 1)).getpixel((0, 0)))) for image in images]

    def caption_pixels(self, pixel_values):
        if [size for size, _ in pixel_values] == [(64, 64)]:
            return [f"{self.name}: warm-up"]  # the agent's warm-up image: not slow, not counted
        if self.started_file:
            with open(self.started_file, "a") as marks:
                marks.write(",".join(f"{w}x{h}" for (w, h), _ in pixel_values) + "\n")
        if self.abort_on and self.abort_on in [size for size, _ in pixel_values]:
            os.abort()  # as a segfault or the OOM killer would: no exception, no clean-up
        time.sleep(self.delay_s)
        captions = [f"{self.name}: a {w}x{h} image of colour {rgb}" for (w, h), rgb in pixel_values]
        self.captioned.extend(captions)
        return captions

    def caption(self, images):
        return self.caption_pixels(self.preprocess(images))


def batches_started(started_file: Path) -> int:
    """Device batches a FakeCaptioner started (the agent's warm-up not counted)."""
    return len(Path(started_file).read_text().splitlines()) if Path(started_file).exists() else 0


def load_fake_captioner(path, device: str = "auto", expected_sha256: str | None = None, **_options):
    """`runtime.captioner.load_captioner`'s signature over a JSON 'artifact' describing a FakeCaptioner."""
    from runtime.artifact.checksum import file_sha256

    sha = file_sha256(path)
    if expected_sha256 and sha != expected_sha256:
        raise ArtifactError(f"{path}: sha256 {sha} != expected {expected_sha256}")
    spec = json.loads(Path(path).read_text())
    if spec.get("broken"):
        raise ArtifactError(f"{path}: this test artifact is broken on purpose")
    return FakeCaptioner(sha256=sha, **spec)


class SlowCaptioner:
    """A real captioner whose device batches take `AGENT_TEST_DELAY_S` longer and are marked in a file.

    Lets a test catch the agent mid-batch (kill -9, SIGTERM) while the real loader path still runs.
    `caption()` (the agent's warm-up) is not slowed.
    """

    def __init__(self, inner, delay_s: float, started_file: str):
        self.inner, self.delay_s, self.started_file = inner, delay_s, started_file

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def caption_pixels(self, pixel_values):
        if self.started_file:
            with open(self.started_file, "a") as marks:
                marks.write(f"{len(pixel_values)}\n")
        time.sleep(self.delay_s)
        return self.inner.caption_pixels(pixel_values)

    def caption(self, images):
        return self.inner.caption(images)


def load_slow_captioner(path, device: str = "auto", expected_sha256: str | None = None, **options):
    """`runtime.captioner.load_captioner`, then slowed by the env AGENT_TEST_DELAY_S / AGENT_TEST_STARTED_FILE."""
    from runtime.captioner import load_captioner

    inner = load_captioner(path, device=device, expected_sha256=expected_sha256, **options)
    return SlowCaptioner(
        inner, float(os.environ.get("AGENT_TEST_DELAY_S", "0")), os.environ.get("AGENT_TEST_STARTED_FILE", "")
    )


def renamed_artifact(src: Path, dst: Path, model: str) -> Path:
    """A real artifact that loads like `src` but names another source model (so another sha256)."""
    import artifact_tools
    from runtime.artifact.verify import verify

    manifest, _ = verify(src)
    return artifact_tools.rewrite_manifest(src, dst, source={**manifest["source"], "model": model})


def fake_artifact(directory: Path, name: str, **spec) -> Path:
    path = Path(directory) / f"{name}.pt2"
    path.write_text(json.dumps({"name": name, **spec}))
    return path


# --- a fresh stack (buckets, queue + dead-letter queue, model) per test ---------------------------


class Stack:
    """Buckets, a queue with a dead-letter queue, and agent settings, all uniquely named for one test."""

    def __init__(self, endpoint: str, tmp: Path, max_receive: int = 3):
        from runtime import aws

        self.endpoint, self.tmp, self.id = endpoint, Path(tmp), uuid.uuid4().hex[:10]
        self.s3, self.sqs = aws.client("s3"), aws.client("sqs")
        self.images, self.artifacts = f"images-{self.id}", f"artifacts-{self.id}"
        for bucket in (self.images, self.artifacts):
            self.s3.create_bucket(Bucket=bucket)
        self.dlq = self.sqs.create_queue(QueueName=f"dlq-{self.id}")["QueueUrl"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.dlq, AttributeNames=["QueueArn"])["Attributes"]
        dlq_arn = attributes["QueueArn"]
        self.queue = self.sqs.create_queue(
            QueueName=f"jobs-{self.id}",
            Attributes={
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)})
            },
        )["QueueUrl"]
        self.settings = {
            "queue_url": self.queue,
            "artifacts_bucket": self.artifacts,
            "images_bucket": self.images,
            "batch_size": 4,
            "batch_wait_s": 0.2,
            "wait_time_s": 1,
            "visibility_timeout_s": 30,
            "retry_backoff_s": 0.0,
            "pointer_poll_s": 0,
            "imds_url": "",
            "device": "cpu",
            "cache_dir": str(self.tmp / "cache"),
            "drain_timeout_s": 30,
            "captioner_loader": "agent_support:load_fake_captioner",
        }

    def config(self, **overrides):
        from runtime.agent.config import AgentConfig, load_config

        path = self.write_config(**overrides)
        config = load_config(path, environ={})
        assert isinstance(config, AgentConfig)
        return config

    def write_config(self, **overrides) -> Path:
        path = self.tmp / f"agent-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps({**self.settings, **overrides}))
        return path

    def publish(self, name: str = "fake-a", **spec) -> dict:
        """Publish a FakeCaptioner 'artifact' (loaded by `load_fake_captioner`) as the current model."""
        return self.publish_file(fake_artifact(self.tmp, name, **spec), model=name)

    def publish_file(self, path: Path, **fields) -> dict:
        """Publish a file as the current model without verifying it (fake and broken artifacts on purpose)."""
        from runtime import registry

        return registry.publish(self.s3, self.artifacts, path, verify=False, **fields)

    def use_real_model(self, artifact: Path, loader: str = "runtime.captioner:load_captioner") -> dict:
        """Publish a real .pt2 and load it with `loader` from now on (the real pointer/download/checksum path)."""
        self.settings["captioner_loader"] = loader
        return self.publish_file(artifact)

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.images, Key=key, Body=body)

    def send_event(self, *keys: str, bucket: str | None = None) -> None:
        """An S3 ObjectCreated notification naming `keys` (URL-encoded, as S3 sends them)."""
        import urllib.parse

        records = [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket or self.images},
                    "object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": 1},
                },
            }
            for key in keys
        ]
        self.send({"Records": records})

    def send(self, body) -> None:
        self.sqs.send_message(QueueUrl=self.queue, MessageBody=body if isinstance(body, str) else json.dumps(body))

    def result(self, key: str) -> dict:
        return json.loads(self.s3.get_object(Bucket=self.images, Key=f"results/{key}.json")["Body"].read())

    def dead_letters(self) -> list[dict]:
        """Every message in the dead-letter queue, with its attributes (each received once, held 30 s)."""
        found = []
        while True:
            reply = self.sqs.receive_message(
                QueueUrl=self.dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=30
            )
            if not reply.get("Messages"):
                return found
            found += reply["Messages"]

    def keys(self, prefix: str = "results/") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.images, Prefix=prefix)
        return sorted(entry["Key"] for page in pages for entry in page.get("Contents", []))

    def versions(self, key: str) -> int:
        reply = self.s3.list_object_versions(Bucket=self.images, Prefix=key)
        return sum(1 for v in reply.get("Versions", []) if v["Key"] == key)

    def counts(self, queue: str | None = None) -> dict[str, int]:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attrs = self.sqs.get_queue_attributes(QueueUrl=queue or self.queue, AttributeNames=names)["Attributes"]
        return {"visible": int(attrs[names[0]]), "in_flight": int(attrs[names[1]])}

    def worker(self, config=None, **kwargs):
        """An in-process Worker over `config` (default settings), with the model loaded as the agent does."""
        from runtime.agent.model.pointer import load_current
        from runtime.agent.worker import Worker

        config = config or self.config()
        captioner, pointer = load_current(config, self.s3, config.device)
        worker = Worker(config, captioner, pointer, sqs=self.sqs, s3=self.s3, **kwargs)
        worker.force_exit = lambda code: (_ for _ in ()).throw(AssertionError(f"forced exit {code}"))
        return worker


# --- the agent as a real process ------------------------------------------------------------------


class AgentProcess:
    """`python -m runtime agent` in a subprocess; collects its JSON log lines."""

    def __init__(self, config_path: Path | None, *args: str, env: dict[str, str]):
        self.lines: list[dict] = []
        environment = {
            **os.environ,
            **env,
            "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
            "PYTHONUNBUFFERED": "1",
        }
        config = ["--config", str(config_path)] if config_path else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runtime", "agent", *config, *args],
            cwd=REPO,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                self.lines.append(json.loads(line))
            except json.JSONDecodeError:
                self.lines.append({"event": "raw", "text": line.rstrip()})

    def events(self, name: str) -> list[dict]:
        return [line for line in list(self.lines) if line.get("event") == name]

    def wait_for(self, name: str, timeout_s: float = 30, count: int = 1) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found[count - 1]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {name!r} log line (x{count}) within {timeout_s}s; log: {self.lines[-20:]}")

    def wait(self, timeout_s: float = 30) -> int:
        code = self.process.wait(timeout_s)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


# --- a fake instance metadata service (IMDSv2) on 127.0.0.1 --------------------------------------


class FakeIMDS:
    """Answers the IMDSv2 paths the agent reads; flip `lifecycle` / `spot` to simulate notices."""

    def __init__(self):
        self.lifecycle, self.spot, self.token = "InService", None, "token-" + uuid.uuid4().hex[:6]
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def do_PUT(self):
                owner.requests.append("PUT " + self.path)
                self._reply(200, owner.token) if self.path == "/latest/api/token" else self._reply(404, "")

            def do_GET(self):
                owner.requests.append("GET " + self.path)
                if self.headers.get("X-aws-ec2-metadata-token") != owner.token:
                    return self._reply(401, "")
                answers = {
                    "/latest/meta-data/autoscaling/target-lifecycle-state": owner.lifecycle,
                    "/latest/meta-data/spot/instance-action": owner.spot,
                    "/latest/meta-data/instance-id": "i-0123456789abcdef0",
                }
                value = answers.get(self.path)
                self._reply(200, value) if value else self._reply(404, "")

            def _reply(self, code, text):
                body = text.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def race_at_group_listing(groups_prefix: str, finish, indexes=(1, 3)) -> dict:
    """Run `finish(s3, index)` for two indexes at once on their own S3 clients, holding both at their listing of
    `groups_prefix` until both have written their group's object; then the first goes on before the second.
    Returns each index's result (runtime.agent.tally's race: at least one must see the whole)."""
    from runtime import aws

    both_wrote, first_done, results = threading.Barrier(2, timeout=20), threading.Event(), {}

    def run(index: int) -> None:
        s3 = aws.client("s3")

        def hold(params, **_):
            if params.get("Prefix") == groups_prefix:
                both_wrote.wait()
                if index == indexes[1]:
                    first_done.wait(20)

        s3.meta.events.register("provide-client-params.s3.ListObjectsV2", hold)
        results[index] = finish(s3, index)
        first_done.set()

    threads = [threading.Thread(target=run, args=(index,)) for index in indexes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results
