"""What the agent accepts as a dataset job or a shard message: strict types, bounded names, the dataset scope."""

from __future__ import annotations

import json

import pytest

from runtime.agent.messages import MAX_SHARDS, UnknownMessage, parse_body
from runtime.agent.scope import Scope
from runtime.agent.work import ShardRef

SCOPE = Scope("pics", "incoming/", ("pics", "results/"), ("s3://datasets/laion/",))


def _job(**fields) -> str:
    return json.dumps({"type": "captionkit.job", "job_id": "job-1", "run": "20250101-000000-abcdef", **fields})


def _refused(body: str, match: str) -> None:
    with pytest.raises(UnknownMessage, match=match):
        parse_body(body, SCOPE)


def test_a_shards_job_parses_to_the_expansion_dict():
    job = parse_body(_job(shards="s3://datasets/laion/part-1/", image_column="jpg", key_column="__key__"), SCOPE).job
    assert job == {
        "job_id": "job-1",
        "run": "20250101-000000-abcdef",
        "kind": "shards",
        "source": "s3://datasets/laion/part-1/",
        "image_column": "jpg",
        "key_column": "__key__",
        "retry": None,
        "part_size": None,
    }


def test_a_manifest_job_and_a_retry_parse():
    job = parse_body(_job(manifest="s3://pics/incoming/keys.csv", key_column="path"), SCOPE).job
    assert (job["kind"], job["source"], job["key_column"], job["image_column"]) == (
        "keys",
        "s3://pics/incoming/keys.csv",
        "path",
        None,
    )
    retry = parse_body(_job(retry="errors"), SCOPE).job
    assert (retry["kind"], retry["source"], retry["retry"]) == ("retry", None, "errors")


def test_a_shard_message_is_a_shard_ref():
    body = json.dumps({"type": "captionkit.shard", "job_id": "job-1", "index": 3, "count": 10, "run": "r1"})
    work = parse_body(body, SCOPE)
    assert work.shard == ShardRef("job-1", 3, 10, "r1") and work.images == () and work.job is None


@pytest.mark.parametrize(
    "fields, why",
    [
        ({"shards": "s3://elsewhere/laion/"}, "not in the images bucket"),
        ({"shards": "s3://datasets/other/"}, "dataset sources"),
        ({"shards": "s3://pics/results/"}, "outside the images prefix"),
        ({"shards": "s3://datasets/laion/part-1"}, "must end in '/'"),
        ({"shards": "datasets/laion/"}, "not an S3 URI"),
        ({"shards": ["s3://datasets/laion/"]}, "must be a string"),
        ({"shards": "s3://datasets/laion/" + "k" * 1100 + "/"}, "over S3's 1,024 bytes"),
        ({"manifest": "s3://datasets/laion/"}, "names a folder"),
        ({"manifest": "s3://other/keys.csv"}, "not in the images bucket"),
        ({"shards": "s3://datasets/laion/", "prefix": "s3://pics/incoming/"}, "exactly one of"),
        ({"shards": "s3://datasets/laion/", "manifest": "s3://datasets/laion/k.csv"}, "exactly one of"),
        ({"retry": "everything"}, "retry must be one of"),
        ({"retry": ["failed"]}, "retry must be one of"),
        ({"retry": "failed", "key_column": "k"}, "no column names"),
        ({"manifest": "s3://datasets/laion/k.csv", "image_column": "jpg"}, "no image column"),
        ({"shards": "s3://datasets/laion/", "image_column": ""}, "1-128 printable"),
        ({"shards": "s3://datasets/laion/", "image_column": "x" * 129}, "1-128 printable"),
        ({"shards": "s3://datasets/laion/", "key_column": "a\nb"}, "1-128 printable"),
        ({"shards": "s3://datasets/laion/", "key_column": 7}, "1-128 printable"),
    ],
)
def test_a_malformed_or_out_of_scope_dataset_job_is_refused(fields, why):
    _refused(_job(**fields), why)


@pytest.mark.parametrize("run", [None, "", "../x", "a/b", "x" * 129, 5])
def test_a_dataset_job_needs_a_run_id_like_a_job_id(run):
    _refused(json.dumps({"type": "captionkit.job", "job_id": "j", "run": run, "shards": "s3://datasets/laion/"}), "run")


@pytest.mark.parametrize(
    "fields, why",
    [
        ({"index": 10, "count": 10}, "0 <= index < count"),
        ({"index": -1}, "0 <= index < count"),
        ({"index": True}, "must be integers"),
        ({"index": 1.0}, "must be integers"),
        ({"count": MAX_SHARDS + 1}, "0 <= index < count"),
        ({"run": "a/b"}, "run"),
        ({"run": None}, "run"),
        ({"job_id": "../j"}, "job_id"),
    ],
)
def test_a_malformed_shard_message_is_refused(fields, why):
    body = {"type": "captionkit.shard", "job_id": "job-1", "index": 0, "count": 2, "run": "r1", **fields}
    _refused(json.dumps(body), why)


def test_prefix_and_image_jobs_stay_as_they_were():
    job = parse_body(json.dumps({"type": "captionkit.job", "job_id": "j", "prefix": "s3://pics/incoming/"}), SCOPE)
    assert (job.job["kind"], job.job["source"], job.job["images"]) == ("images", "s3://pics/incoming/", None)
    with pytest.raises(UnknownMessage, match="not in the images bucket"):  # dataset_sources are for dataset jobs
        parse_body(json.dumps({"type": "captionkit.job", "job_id": "j", "prefix": "s3://datasets/laion/"}), SCOPE)
