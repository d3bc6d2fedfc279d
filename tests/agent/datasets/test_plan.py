"""Planning dataset jobs on moto: listing and checking shards, reading manifests through, expansion into shard
messages (frozen on redelivery). Resubmission and retries: test_plan_resubmit; `runtime submit`: test_plan_submit."""

from __future__ import annotations

import dataclasses
import gzip

import pyarrow as pa
import pytest
from plan_support import MODEL, drain, get_json, job_of, parquet_shard, put_shards, tar_shard

from runtime.agent import checks, plan
from runtime.agent.layout import job_root
from runtime.agent.scope import Scope
from runtime.errors import PlanError, UnknownMessage


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
    put_shards(stack, 2)
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
    put_shards(stack, 12)
    job = job_of(stack, config, {"shards": f"s3://{stack.images}/incoming/set/"})
    queued = plan.expand(stack.s3, stack.sqs, config, job, MODEL)
    assert queued["indexes"] == list(range(12)) and queued["reason"] == "submit"
    sent = drain(stack)
    assert sent == [
        {"type": "captionkit.shard", "job_id": "job-1", "index": n, "count": 12, "run": "run-1"} for n in range(12)
    ]
    manifest = get_json(stack, job_root(config, "job-1") + "manifest.json")
    assert [s["uri"] for s in manifest["shards"]] == [
        f"s3://{stack.images}/incoming/set/{n:03d}.tar" for n in range(12)
    ]
    assert (manifest["kind"], manifest["chunks"], manifest["images"]) == ("shards", 12, None)

    stack.put("incoming/set/999.tar", tar_shard("late"))  # after the expansion: not part of the job
    assert plan.expand(stack.s3, stack.sqs, config, job, MODEL) == queued
    assert drain(stack) == sent
    assert get_json(stack, job_root(config, "job-1") + "manifest.json") == manifest


def test_a_manifest_job_is_cut_into_exact_parts(stack):
    config = stack.config(manifest_chunk_size=3)
    uris = [f"s3://{stack.images}/incoming/{n}.png" for n in range(7)]
    stack.put("incoming/keys.txt", "\n".join(uris).encode())
    job = job_of(stack, config, {"manifest": f"s3://{stack.images}/incoming/keys.txt"})
    plan.expand(stack.s3, stack.sqs, config, job, MODEL)
    root = job_root(config, "job-1")
    manifest = get_json(stack, root + "manifest.json")
    assert (manifest["kind"], manifest["images"], manifest["chunks"]) == ("keys", 7, 3)
    assert manifest["shards"] == [
        {"uri": f"s3://{stack.images}/{root}parts/{n:06d}.json", "format": "keys", "size": size}
        for n, size in enumerate((3, 3, 1))
    ]
    parts = [get_json(stack, f"{root}parts/{n:06d}.json") for n in range(3)]
    assert [part["images"] for part in parts] == [uris[:3], uris[3:6], uris[6:]]
    assert parts[1] == {"source": job["source"], "index": 1, "images": uris[3:6]}
    assert len(drain(stack)) == 3


def test_an_out_of_scope_line_refuses_the_whole_job_at_expansion(stack):
    config = stack.config()
    stack.put("incoming/keys.txt", b"incoming/a.png\nprivate/b.png\n")
    job = job_of(stack, config, {"manifest": f"s3://{stack.images}/incoming/keys.txt"})
    with pytest.raises(UnknownMessage, match="keys.txt line 2: .*private/b.png is outside the images prefix"):
        plan.expand(stack.s3, stack.sqs, config, job, MODEL)
    assert job_root(config, "job-1") + "manifest.json" not in stack.keys() and drain(stack) == []
    refused = get_json(stack, job_root(config, "job-1") + "refused.json")
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
        job_of(stack, config, {"manifest": f"s3://{stack.images}/incoming/keys.txt"}),
        MODEL,
        progress=lambda: calls.append(1),
    )
    assert len(calls) >= 1 and len(drain(stack)) == 50
    blank = gzip.compress(b"\n" * 4_000_000)
    assert len(blank) < 10_000
    stack.put("incoming/blank.txt.gz", blank)
    body = {"manifest": f"s3://{stack.images}/incoming/blank.txt.gz", "job_id": "job-2"}
    with pytest.raises(UnknownMessage, match=r"blank.txt.gz has over 300,000 lines \(max_manifest_lines\)"):
        plan.expand(stack.s3, stack.sqs, config, job_of(stack, config, body), MODEL)
    with pytest.raises(PlanError, match=r"blank.txt.gz has over 300,000 lines \(max_manifest_lines\)"):
        checks.check_manifest(
            stack.s3,
            body["manifest"],
            Scope.of(config),
            max_bytes=config.max_manifest_bytes,
            max_lines=config.max_manifest_lines,
        )
    assert "max_manifest_lines" in get_json(stack, job_root(config, "job-2") + "refused.json")["reason"]
