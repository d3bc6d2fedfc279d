"""The laptop side of dataset jobs on the local AWS: status counts and ETA from a job folder built by hand, collect
row for row in index order with flat memory, --list, and missing shards."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import tracemalloc
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_folder import RUN1, RUN2, T0, Folder
from runtime.agent.layout import shard_output
from runtime.agent.parts.output import COLUMNS, render
from runtime.aws import client as aws_client
from runtime.caption_table import COLUMNS as TABLE_COLUMNS
from tools import collect_shards, cost, job_folder, job_progress
from tools.target import Target


@pytest.fixture
def s3(aws):
    """(an S3 client of the session's moto server, a fresh results bucket)."""
    client, bucket = aws_client("s3"), f"results-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


def ten_shard_job(s3, bucket) -> Folder:
    """10 shards, one run: 6 done (one with 2 error rows), 1 failed, 2 started (in flight), 1 waiting."""
    folder = Folder(s3, bucket, 10)
    folder.run(RUN1, list(range(10)))
    for i in range(6):
        folder.finish(i, RUN1, samples=10, errors=2 if i == 3 else 0)
    folder.finish(6, RUN1, samples=0, status="failed")
    folder.start(7, RUN1)
    folder.start(8, RUN1)
    return folder


def test_status_counts_done_failed_in_flight_and_waiting_shards_with_images_per_s_and_eta(s3):
    folder = ten_shard_job(*s3)
    state = job_folder.ShardJobReader(folder.reader()).read(now=T0 + datetime.timedelta(seconds=100))
    assert (state.done, state.failed, state.in_flight, state.waiting, state.error_shards) == (6, 1, 2, 1, 1)
    assert (state.images_ok, state.images_errors, state.run_finished, state.run_samples) == (58, 2, 7, 60)
    assert state.images_per_s() == pytest.approx(0.6)  # 60 samples in the 100 s since the run was queued
    assert state.eta_s() == pytest.approx(3 / 0.07)  # 3 shards left at 7 shards per 100 s
    assert not state.complete
    text = job_progress.render(state, "~$0.12 so far")
    assert "shards  7/10 finished: 6 done (1 with error rows), 1 failed, 2 in flight, 1 waiting" in text
    assert "images  58 captioned, 2 with errors; 0.6 images/s over this run; ETA 43s" in text
    assert "cost    ~$0.12 so far" in text and f"run {RUN1}" in text


def test_a_retry_run_counts_its_shards_again_and_ignores_the_previous_runs_summary(s3):
    folder = ten_shard_job(*s3)
    for i in (7, 8, 9):
        folder.finish(i, RUN1)
    folder.summary(RUN1)
    folder.run(RUN2, [3, 6])  # retry both: the shard with error rows and the failed one
    folder.start(6, RUN2)
    state = job_folder.ShardJobReader(folder.reader()).read()
    assert (state.run, state.done, state.failed, state.in_flight, state.waiting) == (RUN2, 8, 0, 1, 1)
    assert (state.run_shards, state.run_finished, state.complete) == (2, 0, False)
    assert state.images_per_s() is None and state.eta_s() is None
    assert "no shard of this run finished yet; ETA -" in job_progress.render(state)


def test_a_started_marker_older_than_the_run_is_not_in_flight(s3):
    folder = Folder(*s3, 3)
    folder.start(0, RUN1)  # left by an earlier run's delivery: this run has not started the shard
    folder.run(RUN2, [0, 1, 2], created_at=datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1))
    state = job_folder.ShardJobReader(folder.reader()).read()
    assert (state.in_flight, state.waiting) == (0, 3)


def test_wait_follows_the_shard_bar_until_the_summary_of_its_run(s3):
    folder = ten_shard_job(*s3)
    folder.summary("20261130-000000-000000")  # an earlier run's summary must not end the wait
    looks = []

    def sleep(_s):
        looks.append(1)
        for i in (6, 7, 8, 9):
            folder.finish(i, RUN1)
        folder.summary(RUN1)

    stream = io.StringIO()
    state = job_progress.wait(
        job_folder.ShardJobReader(folder.reader()), run=RUN1, poll_s=0, stream=stream, sleep=sleep
    )
    assert looks == [1] and state.complete and (state.done, state.failed) == (10, 0)
    assert f"job {folder.job_id} shards: 100%|" in stream.getvalue() and "10/10" in stream.getvalue()
    assert state.counts()["shards_done"] == 10 and state.counts()["done"] == 98


def test_the_run_cost_is_hours_since_queued_times_instances_times_price():
    assert cost.run_cost(1800, 2, 1.006) == {"hours": 0.5, "instances": 2, "cost": 1.006}
    assert cost.run_cost(1800, 2, None)["cost"] is None


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_collect_writes_every_sample_exactly_once_in_shard_then_row_order(s3, tmp_path, fmt):
    folder = Folder(*s3, 5)
    folder.run(RUN1, list(range(5)))
    written = []
    for i in (3, 0, 4, 1, 2):  # finished out of order; collected in index order
        written.append((i, folder.finish(i, RUN1, samples=7 + i, errors=1 if i == 2 else 0)))
    folder.summary(RUN1)
    expected = [vars(row) for _, rows in sorted(written, key=lambda w: w[0]) for row in rows]
    found = collect_shards.outputs(folder.reader(), folder.reader().read_manifest())
    out = tmp_path / f"captions.{fmt}"
    report = collect_shards.merge(folder.reader(), found, out, fmt, stream=io.StringIO())
    got = (
        pq.read_table(out).to_pylist()
        if fmt == "parquet"
        else [json.loads(line) for line in out.read_text().splitlines()]
    )
    assert got == expected
    assert len({(row["shard"], row["index"]) for row in got}) == len(got) == sum(7 + i for i in range(5))
    assert (report["rows"], report["errors"], report["captions"], report["shards"]) == (45, 1, 44, 5)
    if fmt == "parquet":  # the caption table's leading columns, then the dataset's own
        names = tuple(pq.read_schema(out).names)
        assert names[:6] == TABLE_COLUMNS and sorted(names) == sorted(COLUMNS)
    assert collect_shards.report_missing(folder.job_id, found) == 0


def collect_peaks(s3, bucket, tmp_path, shards: int, monkeypatch) -> tuple[int, int]:
    """(tracemalloc peak, largest pyarrow allocation seen at a write) collecting `shards` outputs of 400 rows with
    1 KiB captions of random hex (about 400 KiB a file even compressed: more than what collect holds besides)."""
    folder = Folder(s3, bucket, shards)
    rows = [dataclasses.replace(row, caption=os.urandom(512).hex()) for row in folder.rows(0, 400)]
    body = render(rows)
    for i in range(shards):
        s3.put_object(Bucket=bucket, Key=shard_output(folder.root, i), Body=body)
    found = collect_shards.outputs(folder.reader(), folder.reader().read_manifest())
    arrow_peak = [0]

    class Watched(collect_shards.TableWriter):
        def write_table(self, table):
            arrow_peak[0] = max(arrow_peak[0], pa.total_allocated_bytes())
            super().write_table(table)

    monkeypatch.setattr(collect_shards, "TableWriter", Watched)
    tracemalloc.start()
    try:
        collect_shards.merge(folder.reader(), found, tmp_path / f"{shards}.jsonl", "jsonl", stream=io.StringIO())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len((tmp_path / f"{shards}.jsonl").read_text().splitlines()) == 400 * shards
    return peak, arrow_peak[0]


def test_collect_memory_stays_flat_as_the_job_grows(s3, tmp_path, monkeypatch):
    collect_peaks(*s3, tmp_path, 1, monkeypatch)  # first use: botocore's models, pyarrow's pools
    small = collect_peaks(*s3, tmp_path, 2, monkeypatch)
    large = collect_peaks(*s3, tmp_path, 20, monkeypatch)
    assert large[0] < 2 * small[0], (small, large)  # ten times the shards, not ten times the memory
    assert large[1] < 2 * max(small[1], 1 << 20), (small, large)


def test_list_prints_the_shard_files_and_a_running_job_exits_1_naming_the_missing(s3, capsys):
    folder = ten_shard_job(*s3)
    code = collect_shards.main(folder.reader(), folder.reader().read_manifest(), None, None, list_only=True)
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"s3://{folder.bucket}/{shard_output(folder.root, i)}" for i in range(6)]
    assert code == 1 and "4 of the job's shards have no output yet (indexes 6, 7, 8, 9)" in err


def test_a_complete_job_with_failed_shards_collects_with_a_warning_and_exit_0(s3, tmp_path, capsys):
    folder = ten_shard_job(*s3)
    for i in (7, 8, 9):
        folder.finish(i, RUN1)
    folder.summary(RUN1)
    out = tmp_path / "c.parquet"
    code = collect_shards.main(folder.reader(), folder.reader().read_manifest(), out, "parquet", list_only=False)
    printed, err = capsys.readouterr()
    assert code == 0 and pq.read_table(out).num_rows == 90
    assert json.loads(printed)["missing"] == [6]
    assert "warning: 1 shard(s) failed and have no output (indexes 6)" in err and "make retry" in err


def test_collect_refuses_an_output_over_the_bound_and_a_file_that_is_not_an_output(s3, tmp_path):
    folder = Folder(*s3, 2)
    folder.run(RUN1, [0, 1])
    folder.finish(0, RUN1)
    found = collect_shards.outputs(folder.reader(), folder.reader().read_manifest())
    with pytest.raises(collect_shards.CollectError, match="over the 100 collect holds at once"):
        collect_shards.merge(folder.reader(), found, tmp_path / "a.jsonl", "jsonl", max_file_bytes=100)
    sink = io.BytesIO()
    pq.write_table(pa.table({"key": ["x"], "caption": ["y"]}), sink)
    folder.s3.put_object(Bucket=folder.bucket, Key=shard_output(folder.root, 1), Body=sink.getvalue())
    found = collect_shards.outputs(folder.reader(), folder.reader().read_manifest())
    with pytest.raises(collect_shards.CollectError, match="not a CaptionKit shard output"):
        collect_shards.merge(folder.reader(), found, tmp_path / "b.jsonl", "jsonl", stream=io.StringIO())


def test_make_collect_of_a_dataset_job_goes_to_the_shard_files(s3, aws, monkeypatch, tmp_path, capsys):
    from tools import collect

    client, bucket = s3
    folder = Folder(client, bucket, 2)
    folder.run(RUN1, [0, 1])
    rows = folder.finish(0, RUN1) + folder.finish(1, RUN1, samples=3)
    folder.summary(RUN1)
    monkeypatch.setattr(collect.targets, "resolve", lambda _name=None: Target("S", aws["AWS_REGION"], None))
    monkeypatch.setattr(collect, "stack_outputs", lambda *_: {"ResultsBucket": bucket, "ResultsPrefix": "results/"})
    assert collect.main(["--job", folder.job_id, "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"s3://{bucket}/{shard_output(folder.root, i)}" for i in (0, 1)]
    assert collect.main(["--job", folder.job_id, str(tmp_path / "out.jsonl")]) == 0
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [vars(r) for r in rows]


def test_a_redirected_collect_ends_on_its_final_count_and_csv_holds_the_same_table(s3, tmp_path):
    folder = Folder(*s3, 5)
    folder.run(RUN1, list(range(5)))
    for i in range(5):
        folder.finish(i, RUN1, errors=1 if i == 3 else 0)
    folder.summary(RUN1)
    found = collect_shards.outputs(folder.reader(), folder.reader().read_manifest())
    log = io.StringIO()  # not a terminal, as when stderr goes to a file
    report = collect_shards.merge(folder.reader(), found, tmp_path / "c.csv", None, stream=log)
    assert " 5/5 " in log.getvalue().splitlines()[-1], log.getvalue()
    import csv

    with open(tmp_path / "c.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0])[:6] == TABLE_COLUMNS and len(rows) == report["rows"]
    assert sum(1 for r in rows if r["error"]) == report["errors"] == 1


def test_collect_refuses_an_unknown_extension_and_keeps_an_earlier_output(s3, tmp_path):
    folder = Folder(*s3, 1)
    folder.run(RUN1, [0])
    folder.finish(0, RUN1)
    found = collect_shards.outputs(folder.reader(), folder.reader().read_manifest())
    with pytest.raises(collect_shards.CaptionKitError, match="unknown output type '.txt'"):
        collect_shards.merge(folder.reader(), found, tmp_path / "c.txt", None, stream=io.StringIO())
    (tmp_path / "old.jsonl").write_text("earlier\n")
    with pytest.raises(collect_shards.CaptionKitError, match="exists .* --overwrite"):
        collect_shards.merge(folder.reader(), found, tmp_path / "old.jsonl", None, stream=io.StringIO())
    assert (tmp_path / "old.jsonl").read_text() == "earlier\n"
    collect_shards.merge(folder.reader(), found, tmp_path / "old.jsonl", None, overwrite=True, stream=io.StringIO())
    assert (tmp_path / "old.jsonl").read_text() != "earlier\n"
    assert not (tmp_path / "c.txt").exists() and not list(tmp_path.glob("*.partial"))
