"""The data and the sums of bench.datasets: pictures, shards of them, memory samples, request costs."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import PIL.Image

# List prices, us-east-1, S3 Standard and SQS standard queues: PUT/COPY/POST/LIST $0.005 per 1,000, GET/HEAD
# $0.0004 per 1,000, DELETE free (https://c3x.dev/blog/s3-request-fees-explained, read 2026-12-01; the issue's
# $0.005 per 1,000 PUTs agrees); SQS $0.40 per million requests, each 64 KiB of a payload one request
# (https://cloudburn.io/blog/amazon-sqs-pricing, March 2026). The free tiers are left out.
S3_PRICES = {
    "PUT": 0.005 / 1000,
    "POST": 0.005 / 1000,
    "LIST": 0.005 / 1000,
    "GET": 0.0004 / 1000,
    "HEAD": 0.0004 / 1000,
    "DELETE": 0.0,
}
SQS_PRICE = 0.40 / 1_000_000
SIZE = (320, 240)


def images(count: int, bad_every: int = 100, seed: int = 0) -> list[tuple[str, bytes]]:
    """(key, JPEG bytes) of smooth random pictures; every `bad_every`-th is truncated (undecodable)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        buf = io.BytesIO()
        PIL.Image.fromarray(small).resize(SIZE, PIL.Image.BICUBIC).save(buf, "JPEG", quality=85)
        data = buf.getvalue()
        out.append((f"{i:07d}", data[: len(data) // 3] if i % bad_every == bad_every // 2 else data))
    return out


def tar_shard(samples: list[tuple[str, bytes]], no_image: str | None = None) -> bytes:
    """A webdataset shard: `<key>.jpg` and `<key>.txt` per sample (plus one sample with only a .txt)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:

        def add(name: str, data: bytes):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))

        for key, data in samples:
            add(f"{key}.jpg", data)
            add(f"{key}.txt", f"sample {key}".encode())
        if no_image:
            add(f"{no_image}.txt", b"a sample with no image")
    return buf.getvalue()


def parquet_shard(samples: list[tuple[str, bytes]]) -> bytes:
    """A Parquet shard as HF datasets writes an Image() column: a struct of bytes and path, plus a key column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"key": [k for k, _ in samples], "image": [{"bytes": d, "path": f"{k}.jpg"} for k, d in samples]})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=50)
    return buf.getvalue()


class Memory:
    """Samples a process's resident memory (VmRSS, KiB) every `every` seconds until it exits."""

    def __init__(self, pid: int, every: float = 0.25):
        self.pid, self.every, self.samples = pid, every, []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        started = time.monotonic()
        while True:
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
            if rss is None:
                return
            self.samples.append((time.monotonic() - started, rss))
            time.sleep(self.every)

    def join(self):
        self._thread.join(5)

    def summary(self) -> dict:
        """Peak, and the resident memory at a quarter, half and the end of the run (MiB)."""
        if not self.samples:
            return {}
        rss = [r for _, r in self.samples]
        at = lambda f: round(rss[min(len(rss) - 1, int(f * (len(rss) - 1)))] / 1024, 1)  # noqa: E731
        return {
            "peak_mib": round(max(rss) / 1024, 1),
            "at_25_mib": at(0.25),
            "at_50_mib": at(0.5),
            "at_90_mib": at(0.9),
            "samples": len(rss),
        }


def request_cost(operations: dict, images_count: int) -> dict:
    """Requests per image by class, and their cost per 10 million images at the list prices above."""
    per_image = {op: round(n / images_count, 4) for op, n in sorted(operations.items()) if n}
    cost = 0.0
    for op, n in operations.items():
        service, _, kind = op.partition(" ")
        if service == "s3":
            cost += n * S3_PRICES.get(kind, 0.0004 / 1000)
        elif service == "sqs":
            cost += n * SQS_PRICE
    return {
        "requests_per_image": per_image,
        "requests_per_image_total": round(sum(operations.values()) / images_count, 3),
        "request_cost_per_10m_usd": round(cost / images_count * 10_000_000, 2),
    }


def diff(after, before) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
