"""Planning dataset jobs on moto: listing and checking shards, reading manifests through, expansion into shard
messages (frozen on redelivery), resubmission that skips done shards, retries of exactly the failed ones."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import re
import tarfile
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.agent import checks, ledger, plan
from runtime.agent.expand import JobExpansion
from runtime.agent.layout import job_root, run_root
from runtime.agent.messages import parse_body
from runtime.agent.scope import Scope
from runtime.agent.work import Batch, Message
from runtime.errors import PlanError, UnknownMessage

MODEL = types.SimpleNamespace(name="fake-a", sha256="a" * 64)


def tar_shard(*keys: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for key in keys:
            for suffix, body in ((".jpg", b"\xff\xd8 not decoded here"), (".txt", b"a caption")):
                info = tarfile.TarInfo(key + suffix)
                info.size = len(body)
                archive.addfile(info, io.BytesIO(body))
    return out.getvalue()


def parquet_shard(**columns) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table(columns or {"image": [b"x", b"y"], "key": ["a", "b"]}), out)
    return out.getvalue()


def _drain(stack) -> list[dict]:
    bodies = []
    while batch := stack.sqs.receive_message(QueueUrl=stack.queue, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(m["Body"]) for m in batch]
        stack.sqs.delete_message_batch(
            QueueUrl=stack.queue,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )
    return sorted(bodies, key=lambda body: body["index"])


def _job(stack, config, body: dict) -> dict:
    return parse_body(
        json.dumps({"type": "captionkit.job", "job_id": "job-1", "run": "run-1", **body}), Scope.of(config)
    ).job


def _get(stack, key: str):
    return json.loads(stack.s3.get_object(Bucket=stack.images, Key=key)["Body"].read())


def _put_shards(stack, count=3, prefix="incoming/set/"):
    for n in range(count):
        stack.put(f"{prefix}{n:03d}.tar", tar_shard(f"s{n}-a", f"s{n}-b"))


def test_list_shards_takes_tar_and_parquet_sorted_skipping_folders_and_own_results(stack):
    stack.put("incoming/b.tar", tar_shard("x"))
    stack.put("incoming/a.PARQUET", parquet_shard())
    stack.put("incoming/c.txt", b"not a shard")
    stack.put("incoming/d/", b"")
    stack.put("results/_jobs/j/shards/000000.parquet", parquet_shard())
    shards = checks.list_shards(stack.s3, f"s3://{stack.images}/", Scope.of(stack.config()))
    assert [(s["uri"].rsplit("/", 1)[1], s["format"]) for s in shards] == [("a.PARQUET", "parquet"), ("b.tar", "tar")]
    assert shards[1]["size"] == len(tar_shard("x"))


def test_check_shards_summarises_readable_shards(stack):
    _put_shards(stack, 2)
    summary = checks.check_shards(stack.s3, f"s3://{stack.images}/incoming/set/", Scope.of(stack.config()))
    assert (summary["shards"], summary["formats"]) == (2, {"tar": 2})
    assert summary["bytes"] == 2 * len(tar_shard("s0-a", "s0-b"))


@pytest.mark.parametrize(
    "bodies, why",
    [
        ({}, "no .tar or .parquet shards under it"),
        ({"1.tar": tar_shard("a"), "2.tar": b"x" * 1024, "3.tar": b"y" * 1024}, "2.tar: not a tar file"),
        ({"1.tar": b"\0" * 1024}, "1.tar: an empty tar"),
        ({"1.tar": b"short"}, "1.tar: 5 bytes, shorter than one tar header"),
        ({"0.tar": tar_shard("a"), "1.parquet": parquet_shard()[:-3]}, "1.parquet: not a Parquet file"),
    ],
)
def test_check_shards_refuses_naming_the_first_problem(stack, bodies, why):
    for name, body in bodies.items():
        stack.put(f"incoming/set/{name}", body)
    with pytest.raises(PlanError, match=why):
        checks.check_shards(stack.s3, f"s3://{stack.images}/incoming/set/", Scope.of(stack.config()))


def test_check_shards_refuses_a_parquet_shard_without_an_image_column(stack):
    stack.put("incoming/set/0.parquet", parquet_shard(caption=["a", "b"]))
    with pytest.raises(PlanError, match="0.parquet: .*image"):
        checks.check_shards(stack.s3, f"s3://{stack.images}/incoming/set/", Scope.of(stack.config()))
    stack.put("incoming/set/0.parquet", parquet_shard(jpg=[b"x"], caption=["a"]))
    summary = checks.check_shards(
        stack.s3, f"s3://{stack.images}/incoming/set/", Scope.of(stack.config()), image_column="jpg"
    )
    assert summary["image_column"] == "jpg"


def test_check_shards_refuses_an_hf_parquet_of_image_paths_without_bytes_saying_how_to_fix_it(stack):
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    paths = pa.array([{"bytes": None, "path": f"/data/{i}.jpg"} for i in range(3)], image)
    stack.put("incoming/paths/0.parquet", parquet_shard(image=paths, text=["a", "b", "c"]))
    with pytest.raises(
        PlanError,
        match=r"every cell of the image column 'image' is null: the file holds image paths, "
        r"not image bytes .*submit the images themselves with PREFIX= or MANIFEST=",
    ):
        checks.check_shards(stack.s3, f"s3://{stack.images}/incoming/paths/", Scope.of(stack.config()))
    one = pa.array([{"bytes": None, "path": "/a.jpg"}, {"bytes": b"x", "path": "/b.jpg"}], image)
    stack.put("incoming/paths/0.parquet", parquet_shard(image=one, text=["a", "b"]))
    assert (
        checks.check_shards(stack.s3, f"s3://{stack.images}/incoming/paths/", Scope.of(stack.config()))["image_column"]
        == "image"
    )  # one image is enough to try


def test_check_manifest_counts_and_refuses_the_first_bad_line(stack):
    config = stack.config()
    stack.put("incoming/keys.txt", b"incoming/a.png\nincoming/b.png\n")
    assert (
        checks.check_manifest(stack.s3, f"s3://{stack.images}/incoming/keys.txt", Scope.of(config), max_bytes=1000)[
            "images"
        ]
        == 2
    )
    stack.put("incoming/bad.txt", b"incoming/a.png\ns3://other/b.png\n")
    with pytest.raises(PlanError, match="bad.txt line 2: s3://other/b.png is not in the images bucket"):
        checks.check_manifest(stack.s3, f"s3://{stack.images}/incoming/bad.txt", Scope.of(config), max_bytes=1000)
    stack.put("incoming/empty.txt", b"\n")
    with pytest.raises(PlanError, match="lists no images"):
        checks.check_manifest(stack.s3, f"s3://{stack.images}/incoming/empty.txt", Scope.of(config), max_bytes=1000)


def test_a_shards_job_sends_one_message_per_shard_and_a_redelivery_the_same(stack):
    config = stack.config()
    _put_shards(stack, 12)
    job = _job(stack, config, {"shards": f"s3://{stack.images}/incoming/set/"})
    queued = plan.expand(stack.s3, stack.sqs, config, job, MODEL)
    assert queued["indexes"] == list(range(12)) and queued["reason"] == "submit"
    sent = _drain(stack)
    assert sent == [
        {"type": "captionkit.shard", "job_id": "job-1", "index": n, "count": 12, "run": "run-1"} for n in range(12)
    ]
    manifest = _get(stack, job_root(config, "job-1") + "manifest.json")
    assert [s["uri"] for s in manifest["shards"]] == [
        f"s3://{stack.images}/incoming/set/{n:03d}.tar" for n in range(12)
    ]
    assert (manifest["kind"], manifest["chunks"], manifest["images"]) == ("shards", 12, None)

    stack.put("incoming/set/999.tar", tar_shard("late"))  # after the expansion: not part of the job
    assert plan.expand(stack.s3, stack.sqs, config, job, MODEL) == queued
    assert _drain(stack) == sent
    assert _get(stack, job_root(config, "job-1") + "manifest.json") == manifest


def test_a_manifest_job_is_cut_into_exact_parts(stack):
    config = stack.config(manifest_chunk_size=3)
    uris = [f"s3://{stack.images}/incoming/{n}.png" for n in range(7)]
    stack.put("incoming/keys.txt", "\n".join(uris).encode())
    job = _job(stack, config, {"manifest": f"s3://{stack.images}/incoming/keys.txt"})
    plan.expand(stack.s3, stack.sqs, config, job, MODEL)
    root = job_root(config, "job-1")
    manifest = _get(stack, root + "manifest.json")
    assert (manifest["kind"], manifest["images"], manifest["chunks"]) == ("keys", 7, 3)
    assert manifest["shards"] == [
        {"uri": f"s3://{stack.images}/{root}parts/{n:06d}.json", "format": "keys", "size": size}
        for n, size in enumerate((3, 3, 1))
    ]
    parts = [_get(stack, f"{root}parts/{n:06d}.json") for n in range(3)]
    assert [part["images"] for part in parts] == [uris[:3], uris[3:6], uris[6:]]
    assert parts[1] == {"source": job["source"], "index": 1, "images": uris[3:6]}
    assert len(_drain(stack)) == 3


def test_an_out_of_scope_line_refuses_the_whole_job_at_expansion(stack):
    config = stack.config()
    stack.put("incoming/keys.txt", b"incoming/a.png\nprivate/b.png\n")
    job = _job(stack, config, {"manifest": f"s3://{stack.images}/incoming/keys.txt"})
    with pytest.raises(UnknownMessage, match="keys.txt line 2: .*private/b.png is outside the images prefix"):
        plan.expand(stack.s3, stack.sqs, config, job, MODEL)
    assert job_root(config, "job-1") + "manifest.json" not in stack.keys() and _drain(stack) == []
    refused = _get(stack, job_root(config, "job-1") + "refused.json")
    assert refused["job_id"] == "job-1" and refused["run"] == "run-1"
    assert "keys.txt line 2: " in refused["reason"] and "outside the images prefix" in refused["reason"]


def test_a_long_manifest_renews_the_hold_as_it_is_read_and_a_gzip_of_blank_lines_is_refused_by_lines(stack):
    config = dataclasses.replace(stack.config(), max_manifest_lines=300_000)
    keys = b"".join(b"incoming/%06d.png\n" % n for n in range(50_000))
    stack.put("incoming/keys.txt", keys)
    calls = []
    plan.expand(
        stack.s3,
        stack.sqs,
        config,
        _job(stack, config, {"manifest": f"s3://{stack.images}/incoming/keys.txt"}),
        MODEL,
        progress=lambda: calls.append(1),
    )
    assert len(calls) >= 1 and len(_drain(stack)) == 50
    blank = gzip.compress(b"\n" * 4_000_000)
    assert len(blank) < 10_000
    stack.put("incoming/blank.txt.gz", blank)
    body = {"manifest": f"s3://{stack.images}/incoming/blank.txt.gz", "job_id": "job-2"}
    with pytest.raises(UnknownMessage, match=r"blank.txt.gz has over 300,000 lines \(max_manifest_lines\)"):
        plan.expand(stack.s3, stack.sqs, config, _job(stack, config, body), MODEL)
    with pytest.raises(PlanError, match=r"blank.txt.gz has over 300,000 lines \(max_manifest_lines\)"):
        checks.check_manifest(
            stack.s3,
            body["manifest"],
            Scope.of(config),
            max_bytes=config.max_manifest_bytes,
            max_lines=config.max_manifest_lines,
        )
    assert "max_manifest_lines" in _get(stack, job_root(config, "job-2") + "refused.json")["reason"]


def _marker(index, status="done", errors=0, model=MODEL, settings=None, config=None) -> dict:
    return {
        "index": index,
        "run": "run-1",
        "status": status,
        "samples": 2,
        "ok": 2 - errors,
        "errors": errors,
        "shard": f"s{index}",
        "error": "bad" if status == "failed" else None,
        "model_sha256": model.sha256,
        "settings": settings or ledger.settings_fingerprint(model, config),
        "finished_at": "2025-01-01T00:00:10+00:00",
    }


def _with_markers(stack, config, markers: dict):
    _put_shards(stack, 5)
    plan.expand(
        stack.s3, stack.sqs, config, _job(stack, config, {"shards": f"s3://{stack.images}/incoming/set/"}), MODEL
    )
    _drain(stack)
    for index, marker in markers.items():
        ledger.put_json(stack.s3, stack.images, job_root(config, "job-1") + f"chunks/{index:06d}.json", marker)


def test_a_resubmission_skips_shards_done_with_the_same_model_and_settings(stack):
    config = stack.config()
    _with_markers(
        stack,
        config,
        {
            0: _marker(0, config=config),
            1: _marker(1, errors=1, config=config),
            2: _marker(2, "failed", config=config),
            3: _marker(3, settings="0" * 16),
        },
    )
    source = f"s3://{stack.images}/incoming/set/"
    again = {**_job(stack, config, {"shards": source}), "run": "run-2"}
    assert plan.expand(stack.s3, stack.sqs, config, again, MODEL)["indexes"] == [2, 3, 4]
    assert [body["index"] for body in _drain(stack)] == [2, 3, 4]
    other = types.SimpleNamespace(name="fake-b", sha256="b" * 64)  # a new model redoes everything
    assert plan.expand(stack.s3, stack.sqs, config, {**again, "run": "run-3"}, other)["indexes"] == [
        0,
        1,
        2,
        3,
        4,
    ]
    with pytest.raises(UnknownMessage, match="was created over"):
        plan.expand(stack.s3, stack.sqs, config, {**again, "run": "run-4", "source": source + "x/"}, MODEL)
    assert job_root(config, again["job_id"]) + "refused.json" not in stack.keys()  # a message naming another job


@pytest.mark.parametrize("choice, indexes", [("failed", [2]), ("errors", [1]), ("both", [1, 2])])
def test_a_retry_queues_exactly_the_shards_it_names(stack, choice, indexes):
    config = stack.config()
    _with_markers(
        stack,
        config,
        {0: _marker(0, config=config), 1: _marker(1, errors=1, config=config), 2: _marker(2, "failed", config=config)},
    )
    retry = _job(stack, config, {"retry": choice}) | {"run": "run-r"}
    queued = plan.expand(stack.s3, stack.sqs, config, retry, MODEL)
    assert (queued["indexes"], queued["reason"]) == (indexes, f"retry:{choice}")
    assert [body["index"] for body in _drain(stack)] == indexes
    assert _get(stack, run_root(job_root(config, "job-1"), "run-r") + "queued.json") == queued


def test_a_retry_of_no_dataset_job_is_refused_and_dead_lettered(stack):
    config = stack.config()
    retry = _job(stack, config, {"retry": "failed"})
    with pytest.raises(UnknownMessage, match="nothing to retry"):
        plan.expand(stack.s3, stack.sqs, config, retry, MODEL)
    message = Message("m1", "r1", "{}", 1, 0.0, 0.0)
    batch = Batch(
        messages=[message],
        work={
            "m1": parse_body(
                json.dumps({"type": "captionkit.job", "job_id": "job-1", "run": "run-1", "retry": "failed"}),
                Scope.of(config),
            )
        },
    )
    done, retry_later, refused = [], [], []
    settle = types.SimpleNamespace(
        done=done.extend,
        retry=lambda ms, reason: retry_later.extend(ms),
        dead_letter=lambda m, reason: refused.append((m, reason)),
    )
    JobExpansion(s3=stack.s3, sqs=stack.sqs, config=config, settle=settle, progress=None).run(
        message, batch.work["m1"], MODEL
    )
    assert done == [] and retry_later == [] and refused[0][0] is message and "nothing to retry" in refused[0][1]


def test_a_run_with_nothing_to_do_writes_the_summary_now(stack):
    config = stack.config()
    empty = _job(stack, config, {"shards": f"s3://{stack.images}/incoming/none/"})
    assert plan.expand(stack.s3, stack.sqs, config, empty, MODEL)["indexes"] == []
    summary = _get(stack, job_root(config, "job-1") + "summary.json")
    assert (summary["shards"], summary["images"], summary["run"]) == (0, 0, "run-1") and _drain(stack) == []


# --- `runtime submit` checks a dataset job before it queues it --------------------------------------------------


def _submit(stack, monkeypatch, *argv) -> int:
    from runtime.agent import submit

    monkeypatch.setenv("CAPTIONKIT_QUEUE_URL", stack.queue)
    monkeypatch.setenv("CAPTIONKIT_IMAGES_BUCKET", stack.images)
    return submit.main(list(argv))


def test_submit_shards_checks_then_queues_a_job_whose_id_follows_the_source(stack, monkeypatch, capsys):
    _put_shards(stack, 2, "incoming/laion part-1/")
    source = f"s3://{stack.images}/incoming/laion part-1"
    assert _submit(stack, monkeypatch, "--shards", source) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["checked"]["shards"] == 2 and printed["checked"]["formats"] == {"tar": 2}
    assert printed["job_id"].startswith("laion-part-1-") and len(printed["job_id"]) == len("laion-part-1-") + 10
    (body,) = [
        json.loads(m["Body"])
        for m in stack.sqs.receive_message(QueueUrl=stack.queue, MaxNumberOfMessages=10).get("Messages", [])
    ]
    assert body == {
        "type": "captionkit.job",
        "job_id": printed["job_id"],
        "run": printed["run"],
        "shards": source + "/",
    }
    assert parse_body(json.dumps(body), Scope.of(stack.config())).job["kind"] == "shards"
    assert _submit(stack, monkeypatch, "--shards", source + "/") == 0  # the same source: the same job, a new run
    again = json.loads(capsys.readouterr().out)
    assert again["job_id"] == printed["job_id"] and again["run"] != printed["run"]


@pytest.mark.parametrize(
    "argv, why",
    [
        (["--shards", "s3://{images}/incoming/empty/"], "no .tar or .parquet shards"),
        (["--shards", "s3://{images}/elsewhere/"], "outside the images prefix"),
        (["--manifest", "s3://{images}/incoming/bad.txt"], "bad.txt line 2: .*elsewhere/b.png is outside"),
        (["--retry", "no-such-job"], "job no-such-job is not a job of this fleet"),
    ],
)
def test_submit_refuses_a_dataset_job_that_cannot_work_and_queues_nothing(stack, monkeypatch, capsys, argv, why):
    stack.put("incoming/bad.txt", b"incoming/a.png\nelsewhere/b.png\n")
    assert _submit(stack, monkeypatch, *[arg.format(images=stack.images) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("submit: refused, nothing queued: ") and re.search(why, err)
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def test_submit_manifest_and_retry(stack, monkeypatch, capsys):
    stack.put("incoming/keys.txt", b"incoming/a.png\nincoming/b.png\n")
    assert _submit(stack, monkeypatch, "--manifest", f"s3://{stack.images}/incoming/keys.txt", "--job-id", "k1") == 0
    assert json.loads(capsys.readouterr().out)["checked"]["images"] == 2
    config = stack.config()
    ledger.put_json(stack.s3, stack.images, job_root(config, "k1") + "manifest.json", {"shards": [{}, {}]})
    assert _submit(stack, monkeypatch, "--retry", "k1", "--only", "both") == 0
    bodies = [
        json.loads(m["Body"])
        for m in stack.sqs.receive_message(QueueUrl=stack.queue, MaxNumberOfMessages=10).get("Messages", [])
    ]
    assert sorted(body.get("retry") or body.get("manifest") for body in bodies) == [
        "both",
        f"s3://{stack.images}/incoming/keys.txt",
    ]
    assert _submit(stack, monkeypatch, "--retry", "k1", "--image-column", "jpg") == 2
    assert _submit(stack, monkeypatch, "--shards", f"s3://{stack.images}/incoming/", f"s3://{stack.images}/x") == 2
