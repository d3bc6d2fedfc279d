"""A dataset job's folder written by hand, as the agents write it (ds-spec: manifest, markers, runs, outputs), for the
laptop tools' tests."""

from __future__ import annotations

import datetime
import json
import uuid

from runtime.agent.config import AgentConfig
from runtime.agent.layout import done_marker, job_root, part_marker, run_root, shard_output, started_marker
from runtime.agent.parts.output import Row, render
from tools.job_folder import JobReader

RUN1, RUN2 = "20261201-100000-aaaaaa", "20261201-110000-bbbbbb"
T0 = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(seconds=100)


def iso(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="seconds")


class Folder:
    """A dataset job's folder written by hand, as the agents write it (ds-spec: manifest, markers, runs, outputs)."""

    def __init__(self, s3, bucket: str, shards: int, job_id: str | None = None) -> None:
        self.s3, self.bucket, self.job_id = s3, bucket, job_id or f"ds-{uuid.uuid4().hex[:8]}"
        self.root = job_root(AgentConfig(results_prefix="results/"), self.job_id)
        self.uris = [f"s3://data/set/{i:05d}.tar" for i in range(shards)]
        self.put(
            self.root + "manifest.json",
            {
                "job_id": self.job_id,
                "kind": "shards",
                "source": "s3://data/set/",
                "created_at": iso(T0),
                "chunks": shards,
                "shards": [{"uri": uri, "format": "tar", "size": 1000} for uri in self.uris],
                "image_column": None,
                "key_column": None,
                "images": None,
            },
        )

    def put(self, key: str, value) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(value).encode())

    def run(self, run: str, indexes: list[int], created_at: datetime.datetime = T0) -> None:
        self.put(
            run_root(self.root, run) + "queued.json",
            {"run": run, "created_at": iso(created_at), "reason": "submit", "indexes": indexes},
        )

    def rows(self, index: int, samples: int, errors: int = 0) -> list[Row]:
        shard = self.uris[index]
        return [
            Row(
                key=f"{index}-{n:04d}",
                uri=f"{shard}#{index}-{n:04d}",
                shard=shard,
                index=n,
                image_sha256=None if n < errors else f"{n:064x}",
                caption=None if n < errors else f"caption {n}",
                error="cannot decode the image" if n < errors else None,
                model="fake",
                model_sha256="ab" * 32,
                settings="0123456789abcdef",
            )
            for n in range(samples)
        ]

    def finish(
        self, index: int, run: str, samples: int = 10, errors: int = 0, status: str = "done", seconds: float = 5.0
    ) -> list[Row]:
        """The shard's output (when done), then its marker and its run's done/ object, in the agents' order."""
        rows = self.rows(index, samples, errors) if status == "done" else []
        if rows:
            self.s3.put_object(Bucket=self.bucket, Key=shard_output(self.root, index), Body=render(rows))
        self.put(
            part_marker(self.root, index),
            {
                "index": index,
                "shard": self.uris[index],
                "run": run,
                "status": status,
                "samples": samples,
                "ok": len(rows) - errors,
                "errors": errors if rows else 0,
                "error": None if rows else "not a tar: truncated header",
                "model": "fake",
                "model_sha256": "ab" * 32,
                "settings": "0123456789abcdef",
                "output": f"s3://{self.bucket}/{shard_output(self.root, index)}" if rows else None,
                "started_at": iso(T0),
                "finished_at": iso(T0),
                "seconds": seconds,
            },
        )
        self.s3.put_object(Bucket=self.bucket, Key=done_marker(run_root(self.root, run), index), Body=b"")
        return rows

    def start(self, index: int, run: str) -> None:
        self.put(started_marker(self.root, index), {"index": index, "run": run, "started_at": iso(T0), "agent": "g0"})

    def summary(self, run: str) -> None:
        self.put(self.root + "summary.json", {"job_id": self.job_id, "run": run, "finished_at": iso(T0)})

    def reader(self) -> JobReader:
        return JobReader(self.s3, self.bucket, self.root, self.job_id)
