"""One shard on the worker (runtime.agent.parts.run) against moto: each input kind, failures, redelivery, stop."""

from __future__ import annotations

import contextlib
import io
import json
import random
import socket

import botocore.exceptions
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shard_support import (
    MAX_IMAGE_BYTES,
    RUN,
    context,
    expected,
    image_of,
    make_parquet,
    make_tar,
    marker,
    output_bytes,
    output_table,
    put_job,
    put_keys_part,
    put_shard,
    shard_message,
)

from agent_support import FakeCaptioner
from runtime.agent import ledger
from runtime.agent.layout import crash_key, job_root, shard_output, started_marker
from runtime.agent.parts import run


def _check_rows(table, plan, shard_uri: str, uri_of) -> None:
    """Every sample exactly once, in order, with a caption or the error its kind calls for."""
    rows = table.to_pylist()
    assert [row["key"] for row in rows] == [key for key, _ in plan]
    assert [row["index"] for row in rows] == list(range(len(plan)))
    for row, (key, kind) in zip(rows, plan):
        assert row["shard"] == shard_uri and row["uri"] == uri_of(key)
        assert (row["caption"] is None) != (row["error"] is None), row
        if kind == "ok":
            assert row["caption"].startswith("fake-a: a ") and len(row["image_sha256"]) == 64
        else:
            assert row["caption"] is None and row["error"], row
        assert row["model"] == "fake-a" and row["model_sha256"] == "0" * 64 and len(row["settings"]) == 16
    errors = {kind: row["error"] for row, (_, kind) in zip(rows, plan) if kind != "ok"}
    assert "20,000" in errors["big"] or "20000" in errors["big"]


def _done(stack, outcome, job_id: str, index: int, plan) -> dict:
    assert outcome.action == run.DONE, outcome
    found = marker(stack, job_id, index)
    bad = sum(1 for _, kind in plan if kind != "ok")
    assert found["status"] == "done" and found["samples"] == len(plan) and found["errors"] == bad
    assert found["ok"] == len(plan) - bad and found["run"] == RUN and found["error"] is None
    assert found["output"] == f"s3://{stack.images}/{shard_output(job_root(stack.config(), job_id), index)}"
    return found


@pytest.mark.parametrize("fmt", ["tar", "parquet"])
def test_a_shard_becomes_one_output_whose_rows_are_its_samples_once_in_order(stack, fmt):
    plan = expected(23)
    data = make_tar(plan) if fmt == "tar" else make_parquet(plan)
    shard = put_shard(stack, f"incoming/data/shard-0.{fmt}", data, fmt)
    put_job(stack, "job-1", [shard])
    message, work = shard_message("job-1", 0, 1)

    outcome = run.process_shard(context(stack), message, work)

    _done(stack, outcome, "job-1", 0, plan)
    key = f"incoming/data/shard-0.{fmt}"
    _check_rows(output_table(stack, "job-1", 0), plan, shard["uri"], lambda k: f"s3://{stack.images}/{key}#{k}")
    assert outcome.progress.samples == 23 and outcome.progress.device_calls >= 5  # batches of min(4, 4)


@pytest.mark.parametrize("gpu", ["i-0abc/1", ""])
def test_a_started_shard_names_the_agent_by_its_gpu_else_its_host(stack, gpu):
    put_job(stack, "job-9", [put_shard(stack, "incoming/data/shard-0.tar", make_tar(expected(2)), "tar")])
    config = stack.config(max_image_bytes=MAX_IMAGE_BYTES, gpu=gpu)

    assert run.process_shard(context(stack, config), *shard_message("job-9", 0, 1)).action == run.DONE

    started = ledger.get_json(stack.s3, stack.images, started_marker(job_root(config, "job-9"), 0))
    assert started["agent"] == config.agent_name == (gpu or socket.gethostname())


def test_a_part_of_listed_keys_becomes_one_output_with_a_missing_image_as_an_error_row(stack):
    plan = expected(12)  # sample 3 has no image: its URI is listed but never uploaded
    shard = put_keys_part(stack, "job-k", 0, plan)
    put_job(stack, "job-k", [shard], kind="keys")
    outcome = run.process_shard(context(stack), *shard_message("job-k", 0, 1))

    _done(stack, outcome, "job-k", 0, plan)
    rows = output_table(stack, "job-k", 0).to_pylist()
    assert [row["key"] for row in rows] == [f"incoming/listed/{key}.png" for key, _ in plan]
    assert [row["uri"] for row in rows] == [f"s3://{stack.images}/incoming/listed/{key}.png" for key, _ in plan]
    assert [row["shard"] for row in rows] == [shard["uri"]] * 12
    assert "deleted (or never existed)" in rows[3]["error"] and "20,000" in rows[5]["error"]
    assert rows[7]["error"] and rows[7]["image_sha256"]
    assert all(row["caption"] for row, (_, kind) in zip(rows, plan) if kind == "ok")


def test_a_shard_that_cannot_be_read_fails_whole_and_deletes_an_earlier_output(stack):
    shard = put_shard(stack, "incoming/data/broken.tar", b"this is not a tar file at all" * 40, "tar")
    root = put_job(stack, "job-2", [shard])
    stack.s3.put_object(Bucket=stack.images, Key=shard_output(root, 0), Body=b"an earlier run's output")

    outcome = run.process_shard(context(stack), *shard_message("job-2", 0, 1))

    assert outcome.action == run.DONE  # settled: a permanent failure, told by the marker
    found = marker(stack, "job-2", 0)
    assert found["status"] == "failed" and found["output"] is None and found["error"]
    assert stack.keys(root + "shards/") == []
    summary = ledger.get_json(stack.s3, stack.images, root + "summary.json")
    assert summary["shards_failed"] == 1 and summary["failures"][0]["error"] == found["error"]


def test_a_shard_outside_the_dataset_sources_fails_whole_saying_so(stack):
    stack.s3.create_bucket(Bucket=f"elsewhere-{stack.id}")
    stack.s3.put_object(Bucket=f"elsewhere-{stack.id}", Key="x.tar", Body=make_tar(expected(2)))
    put_job(stack, "job-3", [{"uri": f"s3://elsewhere-{stack.id}/x.tar", "format": "tar", "size": 1}])
    outcome = run.process_shard(context(stack), *shard_message("job-3", 0, 1))
    assert outcome.action == run.DONE and "not in the images bucket" in marker(stack, "job-3", 0)["error"]


@pytest.mark.parametrize("index, count, why", [(0, 2, "has 5 shards, not 2"), (5, 5, "has no shard 5")])
def test_a_shard_message_that_disagrees_with_the_manifest_is_refused(stack, index, count, why):
    put_job(stack, "job-4", [put_shard(stack, f"incoming/s{n}.tar", make_tar(expected(2)), "tar") for n in range(5)])
    outcome = run.process_shard(context(stack), *shard_message("job-4", index, count))
    assert outcome.action == run.REFUSE and why in outcome.reason
    assert marker(stack, "job-4", index) is None


def test_a_shard_of_a_job_without_manifest_is_refused(stack):
    outcome = run.process_shard(context(stack), *shard_message("job-none", 0, 1))
    assert outcome.action == run.REFUSE and "no manifest" in outcome.reason


class _Flaky:
    """The S3 client, but GETs of `key` fail with a 503 (S3's SlowDown) `times` times."""

    def __init__(self, s3, key: str, times: int = 1):
        self.s3, self.key, self.times = s3, key, times

    def __getattr__(self, name):
        return getattr(self.s3, name)

    def get_object(self, **kwargs):
        if kwargs.get("Key") == self.key and self.times > 0:
            self.times -= 1
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "SlowDown", "Message": "slow down"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
                "GetObject",
            )
        return self.s3.get_object(**kwargs)


@pytest.mark.parametrize("which", ["shard", "listed image"])
def test_a_transient_get_failure_sends_the_message_back_without_a_marker(stack, which):
    plan = expected(6)
    if which == "shard":
        shard = put_shard(stack, "incoming/data/t.tar", make_tar(plan), "tar")
        flaky_key = "incoming/data/t.tar"
    else:
        shard = put_keys_part(stack, "job-5", 0, plan)
        flaky_key = "incoming/listed/sample-004.png"
    root = put_job(stack, "job-5", [shard], kind="shards" if which == "shard" else "keys")
    ctx = context(stack)
    ctx.s3 = _Flaky(stack.s3, flaky_key)

    outcome = run.process_shard(ctx, *shard_message("job-5", 0, 1))

    assert outcome.action == run.RETRY and "SlowDown" in outcome.reason
    assert marker(stack, "job-5", 0) is None and stack.keys(root + "shards/") == []
    again = run.process_shard(ctx, *shard_message("job-5", 0, 1, receive_count=2))
    assert again.action == run.DONE and len(output_table(stack, "job-5", 0)) == 6


def test_a_redelivered_shard_rewrites_identical_bytes_one_image_per_device_call(stack):
    plan = expected(9)
    shard = put_shard(stack, "incoming/data/r.tar", make_tar(plan), "tar")
    put_job(stack, "job-6", [shard, shard])  # shard 1 still to do: the run is open (a finished one takes no writes)
    calls: list[list[str]] = []

    def on_device(uris):
        calls.append(uris)
        return contextlib.nullcontext()

    assert run.process_shard(context(stack, on_device=on_device), *shard_message("job-6", 0, 2)).action == run.DONE
    first, first_calls = output_bytes(stack, "job-6", 0), len(calls)
    calls.clear()
    outcome = run.process_shard(context(stack, on_device=on_device), *shard_message("job-6", 0, 2, receive_count=2))
    assert outcome.action == run.DONE and output_bytes(stack, "job-6", 0) == first
    assert all(len(uris) == 1 for uris in calls) and len(calls) == 6 > first_calls  # 6 decodable images, alone
    assert calls[0] == [f"s3://{stack.images}/incoming/data/r.tar#sample-000"]  # the journal's names


def test_a_redelivered_shard_makes_a_sample_that_crashed_the_worker_too_often_an_error_row(stack):
    plan = expected(5)
    put_job(stack, "job-7", [put_shard(stack, "incoming/data/c.tar", make_tar(plan), "tar")])
    config = stack.config(max_image_bytes=20_000)
    culprit = f"s3://{stack.images}/incoming/data/c.tar#sample-001"
    stack.s3.put_object(
        Bucket=stack.images, Key=crash_key(config, culprit), Body=b'{"uri": "%s", "crashes": 2}' % culprit.encode()
    )
    ledger.start_shard(stack.s3, config, shard_message("job-7", 0, 1)[1].shard, "crashed-agent")

    outcome = run.process_shard(context(stack, config), *shard_message("job-7", 0, 1, receive_count=2))

    rows = output_table(stack, "job-7", 0).to_pylist()
    assert outcome.action == run.DONE and "crashed the worker 2 times" in rows[1]["error"]
    assert rows[0]["caption"] and rows[2]["caption"] and rows[1]["image_sha256"]


class _FailsOn(FakeCaptioner):
    """A device batch holding an image `width` wide fails, and so does that image alone."""

    def __init__(self, width: int):
        super().__init__("fake-a", "0" * 64, max_batch=4)
        self.width = width

    def caption_pixels(self, pixel_values):
        if any(size[0] == self.width for size, _ in pixel_values):
            raise RuntimeError("CUDA error: an illegal memory access")
        return super().caption_pixels(pixel_values)


def test_a_failing_device_batch_is_retried_image_by_image_and_the_culprit_becomes_an_error_row(stack):
    plan = expected(8)  # samples 1 and 6 are the 21 pixels wide ones
    put_job(stack, "job-8", [put_shard(stack, "incoming/data/f.tar", make_tar(plan), "tar")])
    outcome = run.process_shard(context(stack, model=_FailsOn(21)), *shard_message("job-8", 0, 1))
    rows = output_table(stack, "job-8", 0).to_pylist()
    assert outcome.action == run.DONE and all("illegal memory access" in rows[n]["error"] for n in (1, 6))
    assert all(rows[n]["caption"] for n in (0, 2, 4)) and marker(stack, "job-8", 0)["errors"] == 5


def test_stopping_mid_shard_writes_nothing_and_releases_the_message(stack):
    plan = expected(12)
    root = put_job(stack, "job-9", [put_shard(stack, "incoming/data/s.tar", make_tar(plan), "tar")])
    ctx = context(stack)
    ctx.progress = lambda _progress: ctx.stopping.set()  # asked to stop after the first device batch

    outcome = run.process_shard(ctx, *shard_message("job-9", 0, 1))

    assert outcome.action == run.RELEASE and outcome.progress.device_calls == 1
    assert marker(stack, "job-9", 0) is None and stack.keys(root + "shards/") == []


class _ReplacedMidRead:
    """The S3 client, but after `after` GETs of `key` the object is overwritten with `data` (one time)."""

    def __init__(self, s3, key: str, data: bytes, after: int):
        self.s3, self.key, self.data, self.after = s3, key, data, after

    def __getattr__(self, name):
        return getattr(self.s3, name)

    def get_object(self, **kwargs):
        if kwargs.get("Key") == self.key:
            if self.after == 0:
                self.s3.put_object(Bucket=kwargs["Bucket"], Key=self.key, Body=self.data)
            self.after -= 1
        return self.s3.get_object(**kwargs)


def _spread_parquet(plan, seed: int) -> bytes:
    """The plan's samples in row groups of 3, each followed by 1.5 MB of a column never read: a GET per group."""
    rng = random.Random(seed)
    table = pa.table(
        {
            "key": [key for key, _ in plan],
            "image": pa.array([image_of(n, kind) for n, (_, kind) in enumerate(plan)], pa.binary()),
            "other": pa.array([rng.randbytes(500_000) for _ in plan], pa.binary()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=3, compression="none")
    return sink.getvalue()


@pytest.mark.parametrize("after", [0, 2])
def test_a_parquet_shard_replaced_while_read_is_retried_and_then_read_whole_as_it_now_is(stack, after):
    old, new = expected(9), [(f"fixed-{n}", "ok") for n in range(6)]
    shard = put_shard(stack, "incoming/data/r.parquet", _spread_parquet(old, 1), "parquet")
    put_job(stack, "job-r", [shard])
    ctx = context(stack)
    ctx.s3 = _ReplacedMidRead(stack.s3, "incoming/data/r.parquet", _spread_parquet(new, 2), after=after)

    outcome = run.process_shard(ctx, *shard_message("job-r", 0, 1))  # after 0: before the footer; 2: mid-shard

    assert outcome.action == run.RETRY and "was replaced while it was read" in outcome.reason, outcome
    assert marker(stack, "job-r", 0) is None
    again = run.process_shard(ctx, *shard_message("job-r", 0, 1, receive_count=2))
    assert again.action == run.DONE
    assert output_table(stack, "job-r", 0).column("key").to_pylist() == [key for key, _ in new]


def _folder(stack, root: str) -> dict[str, bytes]:
    return {key: stack.s3.get_object(Bucket=stack.images, Key=key)["Body"].read() for key in stack.keys(root)}


def test_a_replayed_message_of_a_finished_run_writes_nothing_after_a_newer_run_finished(stack):
    import dataclasses
    import json

    from runtime.agent.layout import RUN_QUEUED, run_root
    from runtime.agent.work import ShardRef
    from tools.job_folder import JobReader, ShardJobReader

    plan = expected(5)
    root = put_job(stack, "job-r", [put_shard(stack, "incoming/data/r.tar", make_tar(plan), "tar")])
    replayed = shard_message("job-r", 0, 1)
    assert run.process_shard(context(stack), *replayed).action == run.DONE
    newer = "20250102T000000Z-def456"  # a retry or resubmission: run ids begin with their UTC time
    queued = {"run": newer, "created_at": "2025-01-02T00:00:00+00:00", "reason": "submit", "indexes": [0]}
    ledger.put_json(stack.s3, stack.images, run_root(root, newer) + RUN_QUEUED, queued)
    message, work = shard_message("job-r", 0, 1)
    work = dataclasses.replace(work, shard=ShardRef("job-r", 0, 1, newer))
    assert run.process_shard(context(stack), message, work).action == run.DONE
    before = _folder(stack, root)
    assert json.loads(before[root + "summary.json"])["run"] == newer

    outcome = run.process_shard(context(stack), *replayed)

    state = ShardJobReader(JobReader(stack.s3, stack.images, root, "job-r")).read()
    assert state.complete and state.run == newer  # what `make submit WAIT=1` waits for
    assert _folder(stack, root) == before
    assert outcome.action == run.DONE and "writes nothing" in outcome.reason


def test_a_part_of_a_prefix_job_writes_each_images_result_and_no_parquet(stack):
    plan = expected(6)  # the same samples as a MANIFEST part: the output side is what differs
    shard = put_keys_part(stack, "job-p", 0, plan)
    put_job(stack, "job-p", [shard], kind="images")
    outcome = run.process_shard(context(stack), *shard_message("job-p", 0, 1))

    assert outcome.action == "done" and outcome.marker["output"] == f"s3://{stack.images}/results/"
    assert stack.keys(shard_output(job_root(stack.config(), "job-p"), 0)) == []
    for key, kind in plan:
        record = stack.result(f"incoming/listed/{key}.png")
        assert record["status"] == ("ok" if kind == "ok" else "error"), (key, kind, record)
        if kind == "ok":
            assert record["caption"].startswith("fake-a: a ") and record["source"]["etag"]
    errors = [image["uri"] for image in outcome.marker["error_images"]]
    assert errors == [f"s3://{stack.images}/incoming/listed/{key}.png" for key, kind in plan if kind != "ok"]


def test_a_damaged_part_file_of_a_prefix_job_never_writes_over_another_images_result(stack):
    """Only agents write part files; one that names another bucket's object (its key the same as an image's) gets
    an error in the marker, and the image of that key keeps its own result."""
    stack.put("incoming/listed/mine.png", image_of(0, "ok"))
    stack.s3.put_object(Bucket=stack.images, Key="results/incoming/listed/mine.png.json", Body=b'{"kept": true}')
    root = job_root(stack.config(), "job-d")
    uris = [f"s3://elsewhere-{stack.id}/incoming/listed/mine.png"]
    body = json.dumps({"source": "1 listed images", "index": 0, "images": uris}).encode()
    stack.s3.put_object(Bucket=stack.images, Key=root + "parts/000000.json", Body=body)
    entry = {"uri": f"s3://{stack.images}/{root}parts/000000.json", "format": "keys", "size": 1}
    put_job(stack, "job-d", [entry], kind="images")

    outcome = run.process_shard(context(stack), *shard_message("job-d", 0, 1))

    assert outcome.action == "done" and [i["uri"] for i in outcome.marker["error_images"]] == uris
    assert "not in the images bucket" in outcome.marker["error_images"][0]["error"]
    assert stack.result("incoming/listed/mine.png") == {"kept": True}  # the image of that key keeps its result
