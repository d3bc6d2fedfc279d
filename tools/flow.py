"""The pieces of the whole flow on a deployed stack, shared by `make demo` and the end-to-end tests."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools.paths import REPO
from tools.target import Target

BAD_FILES = {  # name -> what the error record should say (a fragment)
    "empty.jpg": "empty (0 bytes)",
    "not-an-image.jpg": "not a readable image",
    "truncated.jpg": "corrupt or truncated",
    "bomb.png": "decompression-bomb guard",
    "deleted-before-read.png": "was deleted",
}


@dataclass
class AgentRun:
    """How an agent process ended: exit code, wall seconds, start-up seconds, its JSON log lines."""

    code: int
    wall_s: float
    start_s: float
    log: list[dict]

    @property
    def busy_s(self) -> float:
        """From 'started' to the last batch's log line: the time spent on the queue's work."""
        import datetime

        started = [line["time"] for line in self.log if line.get("event") == "started" and "time" in line]
        batches = [line["time"] for line in self.log if line.get("event") == "batch" and "time" in line]
        if not started or not batches:
            return self.wall_s - self.start_s
        parse = datetime.datetime.fromisoformat
        return (parse(batches[-1]) - parse(started[0])).total_seconds()


def image_bytes(image, name: str) -> bytes:
    """Encode a PIL image as its file name's suffix says (PNG or JPEG)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if name.endswith(".jpg") else "PNG")
    return buffer.getvalue()


def drop_images(s3, bucket: str, prefix: str, count: int, seed: int) -> dict[str, str]:
    """Upload `count` freshly generated shapes images (half JPEG, half PNG); returns {key: true caption}."""
    from demo import shapes

    truth = {}
    for i, (image, caption) in enumerate(shapes.make_dataset(count, seed)):
        key = f"{prefix}shapes/{seed}-{i:04d}.{'jpg' if i % 2 else 'png'}"
        s3.put_object(Bucket=bucket, Key=key, Body=image_bytes(image, key))
        truth[key] = caption
    return truth


def drop_bad_files(s3, bucket: str, prefix: str) -> dict[str, str]:
    """Upload one file of each kind of bad input; returns {key: expected error fragment}."""
    import PIL.Image

    from demo import shapes

    image, _ = shapes.make_sample(__import__("random").Random(0))
    jpeg = image_bytes(image, "x.jpg")
    bomb = io.BytesIO()
    PIL.Image.new("1", (12_000, 8_000)).save(bomb, format="PNG")  # 96 Mpx, a few KB on disk
    bodies = {
        "empty.jpg": b"",
        "not-an-image.jpg": b"hello, I am text\n",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "bomb.png": bomb.getvalue(),
        "deleted-before-read.png": image_bytes(image, "x.png"),
    }
    expected = {}
    for name, body in bodies.items():
        key = f"{prefix}bad/{name}"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        expected[key] = BAD_FILES[name]
    s3.delete_object(Bucket=bucket, Key=f"{prefix}bad/deleted-before-read.png")
    return expected


def run_agent(target: Target, config: dict, workdir: Path, *args: str, timeout_s: float = 600) -> AgentRun:
    """Run `python -m runtime agent` against the target until it exits (use --burst); collect its log."""
    path = workdir / "agent.json"
    path.write_text(json.dumps(config, indent=1))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "agent", "--config", str(path), *args],
        cwd=REPO,
        env=target.env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    wall = time.perf_counter() - started
    lines = []
    for line in (proc.stdout + proc.stderr).splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    start_s = next((line.get("start_s", 0.0) for line in lines if line.get("event") == "started"), 0.0)
    return AgentRun(proc.returncode, wall, start_s, lines)


def read_results(s3, bucket: str, results_prefix: str, keys) -> dict[str, dict | None]:
    """The result record of each input key, or None where there is none."""
    out = {}
    for key in keys:
        try:
            out[key] = json.loads(s3.get_object(Bucket=bucket, Key=f"{results_prefix}{key}.json")["Body"].read())
        except s3.exceptions.NoSuchKey:
            out[key] = None
    return out


def queue_depth(sqs, url: str) -> int:
    """Visible + in-flight + delayed messages."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attrs.get(n, 0)) for n in names)


def ensure_demo_model(folder: Path) -> Path:
    """Train the demo captioner into `folder` unless a checkpoint is already there."""
    if not (folder / "config.json").exists():
        subprocess.run([sys.executable, "-m", "demo.model", "--out", str(folder)], cwd=REPO, check=True)
    return folder


def ensure_artifact(model: Path, out: Path, *extra: str) -> Path:
    """Export `model` to `out` unless an artifact newer than the checkpoint is already there."""
    if not out.exists() or out.stat().st_mtime < (model / "config.json").stat().st_mtime:
        subprocess.run(
            [sys.executable, "-m", "export", "--model", str(model), "--out", str(out), *extra], cwd=REPO, check=True
        )
    return out
