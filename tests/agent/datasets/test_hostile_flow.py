"""Hostile Parquet shards and manifests against the real `runtime submit` and a real burst agent on the local AWS:
each is one refused submit or one failed shard naming the reason, and every process lives on."""

from __future__ import annotations

import os
import subprocess
import sys

from shard_support import marker
from test_dataset_flow import Samples, _burst, _get, _parquet, _submit

from runtime.agent.layout import job_root
from tools.paths import REPO
from untrusted import parquet_bytes


def _refused_submit(aws, settings, *args: str) -> str:
    """`python -m runtime submit` that must refuse: its one-line reason (exit 2, no traceback, no signal)."""
    env = {**os.environ, **aws, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "submit", "--config", str(settings), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    return done.stderr.strip()


def test_a_shard_that_kills_the_parquet_reader_fails_alone_and_the_agent_finishes_the_job(stack, aws):
    samples, prefix = Samples(), "incoming/hostile/"
    source = f"s3://{stack.images}/{prefix}"
    _parquet(stack, samples, f"{prefix}p-000.parquet", 3)
    stack.put(f"{prefix}p-001.parquet", parquet_bytes.nested_schema(30_000))  # ends in PAR1: submit's check passes
    stack.put(f"{prefix}p-002.parquet", parquet_bytes.rows_over_an_empty_chunk(1000))
    _parquet(stack, samples, f"{prefix}p-003.parquet", 2)
    settings = stack.write_config()
    job_id = _submit(aws, settings, "--shards", source)["job_id"]
    agent = _burst(aws, settings)  # exit 0 asserted: the agent was never taken down

    crashed, lying = marker(stack, job_id, 1), marker(stack, job_id, 2)
    assert crashed["status"] == "failed" and "the Parquet reader was ended by" in crashed["error"]
    assert lying["status"] == "failed" and "its footer says 1,000 rows and its column chunks hold 0" in lying["error"]
    summary = _get(stack, job_root(stack.config(), job_id) + "summary.json")
    assert (summary["shards_done"], summary["shards_failed"]) == (2, 2)
    assert [(line["index"], line["status"]) for line in agent.events("shard")] == [
        (0, "done"),
        (1, "failed"),
        (2, "failed"),
        (3, "done"),
    ]


def test_submit_refuses_a_hostile_first_shard_and_parquet_manifest_with_the_reason(stack, aws):
    settings = stack.write_config()
    stack.put("incoming/deep/a.parquet", parquet_bytes.nested_schema(30_000))
    why = _refused_submit(aws, settings, "--shards", f"s3://{stack.images}/incoming/deep/")
    assert "the Parquet reader was ended by" in why and len(why.splitlines()) == 1
    stack.put("incoming/keys.parquet", parquet_bytes.more_chunks_than_leaves())
    why = _refused_submit(aws, settings, "--manifest", f"s3://{stack.images}/incoming/keys.parquet")
    assert "row group 0 lists 2 column chunks and the schema has 1 leaves" in why
    assert stack.counts() == {"visible": 0, "in_flight": 0}
