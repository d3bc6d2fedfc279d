"""Unit tests of what the agent accepts from the queue: the scope, hostile bodies, job and part validation."""

from __future__ import annotations

import json
import random

import pytest

from runtime.agent.messages import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    MAX_RECORDS,
    MAX_SHARDS,
    ImageRef,
    UnknownMessage,
    parse_body,
    too_deep,
)
from runtime.agent.scope import Scope

SCOPE = Scope("pics", "incoming/", ("pics", "results/"))


def _record(key="incoming/a.png", bucket="pics", name="ObjectCreated:Put", **obj) -> dict:
    return {"eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key, **obj}}}


def _event(*records) -> str:
    return json.dumps({"Records": list(records)})


def _part(job_id="job-1", index=0, count=2, run="r1") -> str:
    return json.dumps({"type": "captionkit.shard", "job_id": job_id, "index": index, "count": count, "run": run})


def _listed(images=("s3://pics/incoming/a.png",), job_id="job-1") -> str:
    """A URI-list job's message."""
    listed = images if isinstance(images, str) else list(images)
    return json.dumps({"type": "captionkit.job", "job_id": job_id, "images": listed})


def _refused(body: str, match: str | None = None) -> str:
    with pytest.raises(UnknownMessage, match=match) as caught:
        parse_body(body, SCOPE)
    return str(caught.value)


def test_an_event_in_the_images_bucket_and_prefix_is_work():
    work = parse_body(_event(_record("incoming/a%C3%A9.png", versionId="v1", eTag="e1")), SCOPE)
    assert work.images == (ImageRef("pics", "incoming/aé.png", "v1", "e1"),)


@pytest.mark.parametrize(
    "bucket, key, why",
    [
        ("other", "incoming/a.png", "not in the images bucket"),
        ("no-such-bucket", "incoming/a.png", "not in the images bucket"),
        ("pics", "elsewhere/a.png", "outside the images prefix"),
        ("pics", "incoming", "outside the images prefix"),
    ],
)
def test_an_event_for_an_object_outside_the_scope_is_refused_with_the_reason(bucket, key, why):
    reason = _refused(_event(_record(key, bucket)), why)
    assert "s3://pics/incoming/" in reason


def test_one_foreign_record_refuses_the_whole_message():
    _refused(_event(_record("incoming/a.png"), _record("incoming/a.png", bucket="other")), "not in the images bucket")


def test_removals_folders_and_own_results_are_skipped_not_refused():
    work = parse_body(
        _event(
            _record(name="ObjectRemoved:Delete", bucket="other"),
            _record("incoming/dir/"),
            _record("results/incoming/a.png.json"),
        ),
        Scope("pics", "", ("pics", "results/")),
    )
    assert work.images == () and "result object" in work.note and "ObjectRemoved" in work.note


@pytest.mark.parametrize(
    "record, what",
    [
        (_record() | {"eventName": 5}, "eventName must be a string"),
        (_record() | {"eventName": None}, "eventName must be a string"),
        (_record(key=7), "object key must be a string"),
        (_record(key=["incoming/a.png"]), "object key must be a string"),
        (_record(bucket={"name": "pics"}), "bucket name must be a string"),
        (_record(versionId=3), "versionId must be a string"),
        (_record(eTag={"x": 1}), "eTag must be a string"),
        ({"eventName": "ObjectCreated:Put", "s3": "pics/incoming/a.png"}, "bucket name must be a string"),
        ("a record that is a string", "eventName must be a string"),
    ],
)
def test_event_fields_of_the_wrong_type_are_refused(record, what):
    _refused(_event(record), what)


def test_keys_that_are_not_utf8_are_refused():
    _refused(_event(_record("incoming/%FF.png")), "not URL-encoded UTF-8")
    _refused(
        '{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "pics"}, '
        '"object": {"key": "incoming/\\udc80.png"}}}]}',
        "lone surrogate",
    )
    _refused(_listed(["s3://pics/incoming/\udc80.png"]), "lone surrogate")


def test_more_records_than_s3_sends_are_refused():
    _refused(_event(*[_record(f"incoming/{n}.png") for n in range(MAX_RECORDS + 1)]), "records")
    _refused(_event(), "0 records")


@pytest.mark.parametrize(
    "body",
    [
        '{"type": "captionkit.shard", "job_id": "j", "index": Infinity, "count": 2, "run": "r1"}',
        '{"type": "captionkit.shard", "job_id": "j", "index": 0, "count": NaN, "run": "r1"}',
        '{"Records": -Infinity}',
    ],
)
def test_nan_and_infinity_are_refused(body):
    _refused(body, "not JSON")


def test_deep_nesting_is_refused_before_json_parses_it():
    _refused("[" * 3000 + "]" * 3000, "nests deeper")
    _refused('{"Records": [' + '{"a": ' * 50 + "1" + "}" * 50 + "]}", "nests deeper")
    _refused("[" * 100_000, "nests deeper")  # unbalanced as well


def test_brackets_inside_strings_do_not_count_as_nesting():
    key = "incoming/" + "[{" * 40 + '\\"' + "}]" * 40 + ".png"
    assert not too_deep(_event(_record(key)))
    assert not too_deep(json.dumps([[[["x"]]]]), limit=4) and too_deep(json.dumps([[[[["x"]]]]]), limit=4)
    assert parse_body(_event(_record(key)), SCOPE).images[0].key.startswith("incoming/[{")
    assert MAX_DEPTH >= 8  # a real S3 event with its userIdentity, requestParameters, ... nests 5 deep


def test_an_oversized_body_is_refused_before_it_is_parsed():
    body = _event(_record("incoming/" + "k" * MAX_BODY_BYTES))
    _refused(body, "over the 262,144")


def test_a_chunk_message_of_an_agent_before_the_one_job_engine_is_refused_saying_what_to_do():
    body = json.dumps(
        {"type": "captionkit.chunk", "job_id": "job-9", "index": 0, "count": 1, "images": ["s3://pics/incoming/a.png"]}
    )
    _refused(body, "submit the job again under a new job id")


@pytest.mark.parametrize("size", [0, -1, True, 2.0, "2", 100_001, [2]])
def test_a_part_size_is_an_integer_in_bounds(size):
    _refused(json.dumps({**json.loads(_listed()), "part_size": size}), "part_size must be an integer")


def test_a_part_size_goes_with_listed_images_prefixes_and_manifests_never_shards():
    assert parse_body(json.dumps({**json.loads(_listed()), "part_size": 2}), SCOPE).job["part_size"] == 2
    manifest = {"type": "captionkit.job", "job_id": "m", "run": "r", "manifest": "s3://pics/incoming/k.csv"}
    assert parse_body(json.dumps({**manifest, "part_size": 500}), SCOPE).job["part_size"] == 500
    shards = {"type": "captionkit.job", "job_id": "s", "run": "r", "shards": "s3://pics/incoming/", "part_size": 2}
    _refused(json.dumps(shards), "a shard is one part")


def test_a_job_without_a_run_is_the_first_run_and_a_run_is_a_plain_name():
    assert parse_body(_listed(), SCOPE).job["run"] == "00000000-000000-first"
    _refused(json.dumps({**json.loads(_listed()), "run": "../x"}), "run")


def test_a_body_that_is_not_json_or_not_an_object_is_refused():
    for body in ["", "not json", "[1, 2]", '"a string"', "1" * 5000, b"\xff\xfe".decode("latin-1")]:
        _refused(body)


def test_an_sns_envelope_is_unwrapped_once_only():
    inner = _event(_record())
    assert parse_body(json.dumps({"Type": "Notification", "Message": inner}), SCOPE).images
    twice = json.dumps({"Type": "Notification", "Message": json.dumps({"Type": "Notification", "Message": inner})})
    _refused(twice, "neither an S3 event")


@pytest.mark.parametrize(
    "index, count",
    [
        (True, 2),
        (0, True),
        (0.0, 2),
        (0, 2.0),
        ("0", 2),
        (0, "2"),
        (None, 2),
        (-1, 2),
        (2, 2),
        (3, 2),
        (0, 0),
        (0, MAX_SHARDS + 1),
        ([0], 2),
    ],
)
def test_part_index_and_count_must_be_integers_with_index_below_count(index, count):
    _refused(_part(index=index, count=count), "index and count must be integers")


def test_a_part_index_too_long_to_print_is_refused_with_a_readable_reason():
    _refused(_part().replace('"index": 0', '"index": ' + "9" * 5000), "not JSON")


@pytest.mark.parametrize("job_id", ["", "../other-job", "a/b", ".hidden", "x" * 129, 5, None, ["job-1"]])
def test_part_and_job_ids_must_be_plain_names(job_id):
    _refused(_part(job_id=job_id), "job_id")
    _refused(json.dumps({"type": "captionkit.job", "job_id": job_id, "prefix": "s3://pics/incoming/"}), "job_id")


@pytest.mark.parametrize(
    "images, why",
    [
        ([], "non-empty list"),
        ("s3://pics/incoming/a.png", "non-empty list"),
        ([5], "must be a string"),
        (["https://pics/incoming/a.png"], "not an S3 URI"),
        (["s3://other/incoming/a.png"], "not in the images bucket"),
        (["s3://pics/incoming/a.png", "s3://pics/elsewhere/b.png"], "outside the images prefix"),
        (["s3://pics/incoming/sub/"], "names a folder"),
    ],
)
def test_listed_images_must_be_objects_in_the_scope(images, why):
    _refused(_listed(images), why)


@pytest.mark.parametrize(
    "job, why",
    [
        ({"prefix": "s3://other/incoming/"}, "not in the images bucket"),
        ({"prefix": "s3://pics/"}, "outside the images prefix"),
        ({"prefix": "s3://pics/elsewhere/"}, "outside the images prefix"),
        ({"prefix": 7}, "must be a string"),
        ({"images": ["s3://pics/incoming/a.png", "s3://other/incoming/b.png"]}, "not in the images bucket"),
        ({"images": ["s3://pics/results/incoming/a.png.json"]}, "outside the images prefix"),
    ],
)
def test_a_job_outside_the_images_bucket_or_prefix_is_refused(job, why):
    _refused(json.dumps({"type": "captionkit.job", "job_id": "job-1", **job}), why)


def test_a_job_inside_the_scope_is_accepted():
    assert parse_body(
        json.dumps({"type": "captionkit.job", "job_id": "j", "prefix": "s3://pics/incoming/2024/"}), SCOPE
    ).job == {
        "job_id": "j",
        "run": "00000000-000000-first",
        "kind": "images",
        "images": None,
        "source": "s3://pics/incoming/2024/",
        "retry": None,
        "image_column": None,
        "key_column": None,
        "part_size": None,
    }
    job = parse_body(
        json.dumps({"type": "captionkit.job", "job_id": "j", "images": ["s3://pics/incoming/a.png"]}), SCOPE
    ).job
    assert job["images"] == ["s3://pics/incoming/a.png"] and job["source"] is None


def test_own_results_are_outside_the_scope_even_under_the_images_prefix():
    scope = Scope("pics", "", ("pics", "results/"))
    assert "never an image" in scope.outside("pics", "results/a.png.json")
    assert scope.outside("pics", "incoming/a.png") is None
    assert "images_bucket is not set" in Scope("", "incoming/").outside("pics", "incoming/a.png")


def test_whatever_a_mutated_message_holds_parse_body_answers_work_or_unknown_message():
    rng = random.Random(21)
    odd = [
        None,
        True,
        0,
        -1,
        2**70,
        1.5,
        "",
        "x" * 300,
        [],
        {},
        ["s3://pics/incoming/a.png"],
        {"name": 1},
        "s3://pics/incoming/a.png",
        "\udc80",
        "%FF",
        "../",
        "ObjectCreated:Put",
    ]
    templates = [
        json.loads(_event(_record())),
        json.loads(_part()),
        json.loads(_listed()),
        {"type": "captionkit.job", "job_id": "j", "prefix": "s3://pics/incoming/"},
        {"Type": "Notification", "Message": _event(_record())},
    ]

    def mutate(value, depth=0):
        if isinstance(value, dict) and value and rng.random() < 0.8:
            name = rng.choice(sorted(value))
            return {**value, name: mutate(value[name], depth + 1) if rng.random() < 0.6 else rng.choice(odd)}
        if isinstance(value, list) and value and rng.random() < 0.8:
            return [mutate(value[0], depth + 1), *value[1:]] if rng.random() < 0.7 else [*value, rng.choice(odd)]
        return rng.choice(odd)

    kinds = set()
    for _ in range(3000):
        body = json.dumps(mutate(rng.choice(templates)))
        try:
            parse_body(body, SCOPE)
            kinds.add("work")
        except UnknownMessage:
            kinds.add("refused")
    assert kinds == {"work", "refused"}


# --- a part message is read against its job's manifest, which only agents write ----------------------------------
