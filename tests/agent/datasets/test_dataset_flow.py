"""Dataset jobs the way a user drives them, on the local AWS: `python -m runtime submit` and a real agent process.

Each input kind (webdataset tars, HF-style Parquet, a CSV manifest of keys, an S3 Inventory report) is submitted,
captioned by a burst agent with the fake captioner, and collected with tools.collect_shards: every sample comes
back exactly once, its caption from its own image, an error row for exactly each bad sample. A resubmission queues
nothing and leaves the outputs as they were; a retry requeues exactly the shard that failed.
"""

from __future__ import annotations

import collections
import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.parse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shard_support import CORRUPT, marker

from agent_support import AgentProcess, png
from runtime.agent import checks
from runtime.agent.layout import job_root, run_root
from runtime.agent.scope import Scope
from tools import collect_shards
from tools.job_folder import JobReader
from tools.paths import REPO

MODEL = "fake-a"


class Samples:
    """The samples a test put in S3: per (shard or listed URI, key), the caption the fake captioner must give, or
    None for a sample that must come back as an error row."""

    def __init__(self):
        self.expected: list[tuple[str, str, str | None, str | None]] = []  # (shard, key, caption, image_sha256)
        self.count = 0

    def image(self, bad: bool = False) -> tuple[bytes, str | None]:
        """A solid image of a size no other sample has (so its caption names it), or corrupt bytes."""
        self.count += 1
        if bad:
            return CORRUPT, None
        size, colour = (16 + self.count, 10 + self.count % 7), (self.count * 37 % 256, 120, 40)
        return png(colour=colour, size=size), f"{MODEL}: a {size[0]}x{size[1]} image of colour {colour}"

    def add(self, shard: str, key: str, caption: str | None, data: bytes | None) -> None:
        self.expected.append((shard, key, caption, hashlib.sha256(data).hexdigest() if data is not None else None))


def _tar(stack, samples: Samples, key: str, count: int, bad: tuple[int, ...] = ()) -> bytes:
    """A webdataset tar: `<key>.png` (`.jpg` for a corrupt one) and `<key>.json` per sample."""
    out, uri = io.BytesIO(), f"s3://{stack.images}/{key}"
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for n in range(count):
            data, caption = samples.image(bad=n in bad)
            name = f"s{n:04d}"
            samples.add(uri, name, caption, data)
            for member, body in ((f"{name}.{'jpg' if caption is None else 'png'}", data), (f"{name}.json", b"{}")):
                info = tarfile.TarInfo(member)
                info.size = len(body)
                archive.addfile(info, io.BytesIO(body))
    body = out.getvalue()
    stack.put(key, body)
    return body


def _parquet(stack, samples: Samples, key: str, count: int, bad: tuple[int, ...] = ()) -> None:
    """An HF datasets layout: an `image` struct column {bytes, path}, keys guessed from the struct's path."""
    uri, cells = f"s3://{stack.images}/{key}", []
    for n in range(count):
        data, caption = samples.image(bad=n in bad)
        path = f"img-{key.rsplit('/', 1)[-1]}-{n}.png"
        samples.add(uri, path, caption, data)
        cells.append({"bytes": data, "path": path})
    image = pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    sink = io.BytesIO()
    pq.write_table(pa.table({"image": image, "label": list(range(count))}), sink, row_group_size=2)
    stack.put(key, sink.getvalue())


def _listed(stack, samples: Samples, keys: list[str], bad: tuple[str, ...] = ()) -> None:
    """One object per listed key; a key listed twice is two samples of the same image."""
    seen: dict[str, tuple[bytes, str | None]] = {}
    for key in keys:
        if key not in seen:
            seen[key] = samples.image(bad=key in bad)
            stack.put(key, seen[key][0])
        samples.add(f"s3://{stack.images}/{key}", key, seen[key][1], seen[key][0])


def _submit(aws, settings: Path, *args: str) -> dict:
    """`python -m runtime submit --config <the agent's settings> ...` as a user runs it; its printed JSON."""
    env = {**os.environ, **aws, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "submit", "--config", str(settings), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _burst(aws, settings: Path) -> AgentProcess:
    agent = AgentProcess(settings, "--burst", env=aws)
    try:
        assert agent.wait(120) == 0, agent.lines[-15:]
    finally:
        agent.kill()
    return agent


def _get(stack, key: str) -> dict:
    return json.loads(stack.s3.get_object(Bucket=stack.images, Key=key)["Body"].read())


def _collect(stack, job_id: str, tmp_path: Path) -> list[dict]:
    """The job's rows as `make collect` writes them (tools.collect_shards into one Parquet file)."""
    reader = JobReader.for_job(stack.s3, stack.images, "results/", job_id)
    found = collect_shards.outputs(reader, reader.read_manifest())
    out = tmp_path / f"{job_id}.parquet"
    report = collect_shards.merge(reader, found, out, "parquet", stream=io.StringIO())
    rows = pq.read_table(out).to_pylist()
    assert report["rows"] == len(rows)
    return rows


def _etags(stack, root: str) -> dict[str, str]:
    pages = stack.s3.get_paginator("list_objects_v2").paginate(Bucket=stack.images, Prefix=root + "shards/")
    return {entry["Key"]: entry["ETag"] for page in pages for entry in page.get("Contents", [])}


def _assert_rows_are_the_samples(rows: list[dict], samples: Samples, by_uri: bool = False) -> None:
    """Each sample exactly once (a multiset: duplicates counted), its caption from its own image, or an error."""
    source = "uri" if by_uri else "shard"
    got = collections.Counter((row[source], row["key"], row["caption"], row["image_sha256"]) for row in rows)
    assert got == collections.Counter(samples.expected)
    for row in rows:
        assert (row["error"] is None) == (row["caption"] is not None), row
        assert row["model"] == MODEL and row["settings"] and len(row["model_sha256"]) == 64
    assert all(row["error"] for row in rows if row["caption"] is None)


def _assert_summary(summary: dict, samples: Samples, shards: int, failed_shards: int = 0) -> None:
    bad = sum(1 for _shard, _key, caption, _sha in samples.expected if caption is None)
    assert (summary["shards"], summary["shards_done"], summary["shards_failed"]) == (
        shards,
        shards - failed_shards,
        failed_shards,
    )
    assert (summary["images"], summary["done"], summary["errors"]) == (
        len(samples.expected),
        len(samples.expected) - bad,
        bad,
    )


def _tars(stack, samples: Samples, prefix: str) -> None:
    _tar(stack, samples, f"{prefix}a-000.tar", 4, bad=(2,))
    _tar(stack, samples, f"{prefix}a-001.tar", 5, bad=(0,))
    _tar(stack, samples, f"{prefix}a-002.tar", 3, bad=(1,))


def _parquets(stack, samples: Samples, prefix: str) -> None:
    _parquet(stack, samples, f"{prefix}p-000.parquet", 5, bad=(3,))
    _parquet(stack, samples, f"{prefix}p-001.parquet", 4, bad=(0,))


def _csv_manifest(stack, samples: Samples, prefix: str) -> str:
    """keys.csv with a header, one key listed twice, a bad image and a key never uploaded: 8 rows, parts of 3."""
    keys = [f"{prefix}img/{n}.png" for n in range(6)] + [f"{prefix}img/2.png"]
    _listed(stack, samples, keys, bad=(f"{prefix}img/4.png",))
    keys.append(f"{prefix}img/gone.png")
    samples.add(f"s3://{stack.images}/{keys[-1]}", keys[-1], None, None)
    lines = io.StringIO()
    writer = csv.writer(lines)
    writer.writerow(["key", "label"])
    writer.writerows([key, "x"] for key in keys)
    stack.put(f"{prefix}keys.csv", lines.getvalue().encode())
    return f"{prefix}keys.csv"


def _inventory(stack, samples: Samples, prefix: str) -> str:
    """An S3 Inventory report: manifest.json naming one gzip CSV data file (Bucket, Key URL-encoded, Size)."""
    keys = [f"{prefix}photos/a {n}+b.png" for n in range(5)]  # a space and a '+': URL-encoded as Inventory does
    _listed(stack, samples, keys, bad=(keys[1],))
    rows = "".join(f'"{stack.images}","{urllib.parse.quote_plus(key, safe="/")}","1"\n' for key in keys)
    data_key = f"{prefix}inventory/data/0001.csv.gz"
    stack.put(data_key, gzip.compress(rows.encode()))
    report = {
        "sourceBucket": stack.images,
        "destinationBucket": f"arn:aws:s3:::{stack.images}",
        "version": "2016-11-30",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size",
        "files": [{"key": data_key, "size": 1, "MD5checksum": "0" * 32}],
    }
    stack.put(f"{prefix}inventory/manifest.json", json.dumps(report).encode())
    return f"{prefix}inventory/manifest.json"


KINDS = {
    "tars": (_tars, "--shards", 3),
    "parquet": (_parquets, "--shards", 2),
    "csv": (_csv_manifest, "--manifest", 3),
    "inventory": (_inventory, "--manifest", 2),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_input_kind_submitted_captioned_and_collected_exactly_once(kind, stack, aws, tmp_path):
    make, flag, shards = KINDS[kind]
    samples, prefix = Samples(), f"incoming/{kind}/"
    made = make(stack, samples, prefix)
    source = f"s3://{stack.images}/{made or prefix}"
    settings = stack.write_config(manifest_chunk_size=3)
    submitted = _submit(aws, settings, flag, source)
    job_id = submitted["job_id"]
    root = job_root(stack.config(), job_id)
    if kind == "tars":  # a hostile shard message mixed in: dead-lettered alone, nothing of the job touched
        stack.send({"type": "captionkit.shard", "job_id": job_id, "index": 7, "count": 8, "run": submitted["run"]})

    agent = _burst(aws, settings)

    summary = _get(stack, root + "summary.json")
    assert summary["run"] == submitted["run"] and summary["source"] == source
    _assert_summary(summary, samples, shards)
    rows = _collect(stack, job_id, tmp_path)
    _assert_rows_are_the_samples(rows, samples, by_uri=flag == "--manifest")
    assert len(rows) == len(samples.expected)
    expanded = agent.events("job_expanded")
    assert [(line["job_id"], line["queued"], line["new"]) for line in expanded] == [(job_id, shards, True)]
    lines = agent.events("shard")
    assert sorted(line["index"] for line in lines if line["action"] == "done") == list(range(shards))
    assert [line["index"] for line in lines if line["action"] != "done"] == ([7] if kind == "tars" else [])
    assert stack.counts() == {"visible": 0, "in_flight": 0}
    assert stack.counts(stack.dlq)["visible"] == (1 if kind == "tars" else 0)


def test_a_rerun_of_the_same_source_queues_nothing_and_leaves_the_outputs_as_they_were(stack, aws, tmp_path):
    samples, source = Samples(), f"s3://{stack.images}/incoming/rerun/"
    _tars(stack, samples, "incoming/rerun/")
    settings = stack.write_config()
    first = _submit(aws, settings, "--shards", source)
    _burst(aws, settings)
    root = job_root(stack.config(), first["job_id"])
    before = _etags(stack, root)
    outputs = {key: stack.s3.get_object(Bucket=stack.images, Key=key)["Body"].read() for key in before}
    assert len(before) == 3

    again = _submit(aws, settings, "--shards", source)
    agent = _burst(aws, settings)

    assert again["job_id"] == first["job_id"] and again["run"] != first["run"]  # the same job, a new run
    assert [(line["queued"], line["skipped"], line["new"]) for line in agent.events("job_expanded")] == [(0, 3, False)]
    assert agent.events("shard") == []
    assert stack.counts() == {"visible": 0, "in_flight": 0}
    assert _etags(stack, root) == before
    assert {key: stack.s3.get_object(Bucket=stack.images, Key=key)["Body"].read() for key in before} == outputs
    assert _get(stack, run_root(root, again["run"]) + "queued.json")["indexes"] == []
    summary = _get(stack, root + "summary.json")
    assert summary["run"] == again["run"]
    _assert_summary(summary, samples, 3)
    _assert_rows_are_the_samples(_collect(stack, first["job_id"], tmp_path), samples)


def test_a_retry_requeues_exactly_the_failed_shard_and_completes_the_job(stack, aws, tmp_path):
    samples, prefix = Samples(), "incoming/retry/"
    source = f"s3://{stack.images}/{prefix}"
    _tar(stack, samples, f"{prefix}r-000.tar", 4, bad=(1,))
    good = _tar(stack, samples, f"{prefix}r-001.tar", 4, bad=(3,))
    junk = good[:512] + bytes(range(256)) * ((len(good) - 512) // 256) + b"\x01" * ((len(good) - 512) % 256)
    stack.put(f"{prefix}r-001.tar", junk)  # its first header is sound: submit's check cannot see the rest
    _tar(stack, samples, f"{prefix}r-002.tar", 3, bad=(0,))
    assert checks.check_shards(stack.s3, source, Scope.of(stack.config()))["shards"] == 3
    settings = stack.write_config()
    first = _submit(aws, settings, "--shards", source)
    job_id, root = first["job_id"], job_root(stack.config(), first["job_id"])
    _burst(aws, settings)

    failed = marker(stack, job_id, 1)
    assert failed["status"] == "failed" and "checksum" in failed["error"] and failed["output"] is None
    summary = _get(stack, root + "summary.json")
    assert (summary["shards_done"], summary["shards_failed"]) == (2, 1)
    assert [entry["index"] for entry in summary["failures"]] == [1]
    assert sorted(_etags(stack, root)) == [f"{root}shards/000000.parquet", f"{root}shards/000002.parquet"]
    kept = _etags(stack, root)

    stack.put(f"{prefix}r-001.tar", good)  # fixed, the same bytes the frozen manifest's size counts
    retry = _submit(aws, settings, "--retry", job_id, "--only", "failed")
    agent = _burst(aws, settings)

    queued = _get(stack, run_root(root, retry["run"]) + "queued.json")
    assert (queued["indexes"], queued["reason"]) == ([1], "retry:failed")
    assert [(line["index"], line["status"]) for line in agent.events("shard")] == [(1, "done")]
    assert marker(stack, job_id, 1)["status"] == "done" and marker(stack, job_id, 1)["run"] == retry["run"]
    summary = _get(stack, root + "summary.json")
    assert summary["run"] == retry["run"] and summary["failures"] == []
    _assert_summary(summary, samples, 3)
    assert {key: tag for key, tag in _etags(stack, root).items() if key in kept} == kept  # the others untouched
    _assert_rows_are_the_samples(_collect(stack, job_id, tmp_path), samples)
    assert stack.counts() == {"visible": 0, "in_flight": 0} and stack.counts(stack.dlq)["visible"] == 0
