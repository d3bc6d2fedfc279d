"""dataset_sources: the workers may read exactly the named locations, and a setting that would grant more is refused."""

import json
import re

import pytest
from test_stack_iam import as_list, render, worker_role_id, worker_statements

from stacks.dataset_sources import POLICY_BUDGET_CHARS, parse, policy_chars
from stacks.settings import Settings, SettingsError
from stacks.synth import synthesize

DATASET_SIDS = re.compile(r"ReadDatasets|ListDatasetBucket\d+")
TWO = "s3://laion-shards/train/,s3://coco-parquet/"
IAM_ROLE_POLICY_CHARS = 10_240  # IAM and AWS STS quotas: a role's inline policies in all, white space not counted
LONGEST = {"AWS::Partition": "aws-us-gov", "AWS::Region": "ap-southeast-5", "AWS::AccountId": "0" * 12}


def with_sources(value: str):
    return synthesize((("dataset_sources", value),))


def dataset_statements(synthesized) -> dict:
    return {sid: s for sid, s in worker_statements(synthesized).items() if DATASET_SIDS.fullmatch(sid)}


def agent_config(synthesized) -> dict:
    value = synthesized.template["Outputs"]["AgentConfig"]["Value"]
    parts = value["Fn::Join"][1] if isinstance(value, dict) else [value]
    return json.loads("".join(p if isinstance(p, str) else "TOKEN" for p in parts))


def test_no_dataset_sources_grant_nothing_more():
    default = synthesize()
    assert dataset_statements(default) == {}
    assert agent_config(default)["dataset_sources"] == []
    assert json.loads(default.template["Outputs"]["DatasetSources"]["Value"]) == []


def test_two_sources_grant_exactly_their_objects_and_listings_under_their_prefixes():
    statements = dataset_statements(with_sources(TWO))
    assert set(statements) == {"ReadDatasets", "ListDatasetBucket0", "ListDatasetBucket1"}
    read, prefixed, whole = (statements[sid] for sid in ("ReadDatasets", "ListDatasetBucket0", "ListDatasetBucket1"))
    assert as_list(read["Action"]) == ["s3:GetObject"] and "Condition" not in read
    assert sorted(map(render, as_list(read["Resource"]))) == [
        "arn:<AWS::Partition>:s3:::coco-parquet/*",
        "arn:<AWS::Partition>:s3:::laion-shards/train/*",
    ]
    assert as_list(prefixed["Action"]) == ["s3:ListBucket"] == as_list(whole["Action"])
    assert render(prefixed["Resource"]) == "arn:<AWS::Partition>:s3:::laion-shards"
    assert prefixed["Condition"] == {"StringLike": {"s3:prefix": "train/*"}}
    assert render(whole["Resource"]) == "arn:<AWS::Partition>:s3:::coco-parquet" and "Condition" not in whole
    assert all(s["Effect"] == "Allow" for s in statements.values())


def test_prefixes_of_one_bucket_share_one_listing_limited_to_them():
    statements = dataset_statements(with_sources("s3://shards/laion/,s3://shards/coco/val/"))
    assert set(statements) == {"ReadDatasets", "ListDatasetBucket0"}
    assert statements["ListDatasetBucket0"]["Condition"] == {"StringLike": {"s3:prefix": ["laion/*", "coco/val/*"]}}


def test_the_images_buckets_grants_are_unchanged_by_dataset_sources():
    before = worker_statements(synthesize())
    after = {sid: s for sid, s in worker_statements(with_sources(TWO)).items() if not DATASET_SIDS.fullmatch(sid)}
    assert after == before


def test_the_workers_config_and_the_stack_output_name_the_sources():
    synthesized = with_sources(TWO)
    assert agent_config(synthesized)["dataset_sources"] == TWO.split(",")
    assert json.loads(synthesized.template["Outputs"]["DatasetSources"]["Value"]) == TWO.split(",")
    assert json.dumps(TWO.split(","), separators=(",", ":")) in synthesized.stack.fleet.agent_config_json


@pytest.mark.parametrize(
    "value, message",
    [
        ("s3://shards/train", r"'s3://shards/train' is not s3://bucket/ or s3://bucket/prefix/"),
        ("s3://shards", r"is not s3://bucket/"),
        ("https://shards/train/", r"is not s3://bucket/"),
        ("s3://Shards/train/", r"is not s3://bucket/"),
        ("s3://shards//train/", r"no leading '/'"),
        ("s3://shards/tr*in/", r"without '\*', '\?' or '\$'"),
        ("s3://shards/a?/", r"without '\*'"),
        ("s3://shards/train/,s3://shards/train/part-1/", r"'s3://shards/train/part-1/' overlaps 's3://shards/train/'"),
        ("s3://shards/train/,s3://shards/", r"'s3://shards/' overlaps 's3://shards/train/'"),
        (",".join(f"s3://shards/{i}/" for i in range(21)), r"has 21 entries: at most 20"),
        (",".join(f"s3://b{i:02d}{'x' * 60}/{'p' * 150}/" for i in range(12)), r"characters to the workers' IAM"),
    ],
)
def test_a_bad_source_is_refused_naming_the_setting_and_the_fix(value, message):
    with pytest.raises(SettingsError, match=message) as error:
        Settings.from_mapping({"dataset_sources": value})
    assert "dataset_sources" in str(error.value) and "cdk -c key=value" in str(error.value)


def own_bucket(synthesized, name: str) -> str:
    """The name CloudFormation gives the stack's bucket `name` (`<stack>-<logical id>-<random>`, lower case)."""
    stack = synthesized.stack
    logical_id = stack.get_logical_id(getattr(stack.storage, name).node.default_child)
    return f"captionkit-{logical_id.lower()}-1x2y3z4w5v6u"


@pytest.mark.parametrize(
    "name, prefix, message",
    [
        ("artifacts", "", "is this stack's artifacts bucket"),
        ("artifacts", "models/", "is this stack's artifacts bucket"),
        ("access_logs", "images/", "is this stack's access-log bucket"),
        ("images", "", "overlaps the results prefix 'results/'"),
        ("images", "results/job-1/", "overlaps the results prefix 'results/'"),
    ],
)
def test_the_stacks_own_buckets_are_refused(name, prefix, message):
    uri = f"s3://{own_bucket(synthesize(), name)}/{prefix}"
    with pytest.raises(SettingsError, match=message) as error:
        with_sources(uri)
    assert uri in str(error.value) and "cdk -c key=value" in str(error.value)


def test_a_prefix_of_the_images_bucket_beside_its_results_is_accepted():
    beside = f"s3://{own_bucket(synthesize(), 'images')}/datasets/"
    statements = dataset_statements(with_sources(beside))
    assert statements["ListDatasetBucket0"]["Condition"] == {"StringLike": {"s3:prefix": "datasets/*"}}


def rendered_longest(value):
    """A template value as IAM would count it, every token at its longest: pseudo parameters by the longest the
    partitions have, any other reference by 160 characters (longer than any of this stack's ARNs and URLs)."""
    if isinstance(value, list):
        return [rendered_longest(v) for v in value]
    if isinstance(value, dict):
        if "Ref" in value:
            return LONGEST.get(value["Ref"], "x" * 160)
        if "Fn::GetAtt" in value:
            return "x" * 160
        if "Fn::Join" in value:
            return value["Fn::Join"][0].join(rendered_longest(p) for p in value["Fn::Join"][1])
        if "Fn::Sub" in value:
            return re.sub(r"\$\{([^}]+)\}", lambda m: LONGEST.get(m.group(1), "x" * 160), value["Fn::Sub"])
        return {k: rendered_longest(v) for k, v in value.items()}
    return value


def inline_policy_chars(synthesized, keep=lambda sid: True) -> int:
    role = {"Ref": worker_role_id(synthesized)}
    documents = [
        r["Properties"]["PolicyDocument"]
        for r in synthesized.template["Resources"].values()
        if r["Type"] == "AWS::IAM::Policy" and role in r["Properties"]["Roles"]
    ]
    kept = [{**d, "Statement": [s for s in d["Statement"] if keep(s.get("Sid", ""))]} for d in documents]
    return sum(len(json.dumps(rendered_longest(d), separators=(",", ":"))) for d in kept)


def test_the_rest_of_the_workers_policies_leave_the_dataset_budget_free():
    assert inline_policy_chars(synthesize()) + POLICY_BUDGET_CHARS <= IAM_ROLE_POLICY_CHARS


def test_the_budget_counts_exactly_what_the_statements_add():
    value = ",".join([*(f"s3://b{i:02d}{'x' * 20}/{'p' * 40}/" for i in range(8)), "s3://whole-bucket/"])
    synthesized = with_sources(value)
    added = inline_policy_chars(synthesized) - inline_policy_chars(synthesized, lambda s: not DATASET_SIDS.fullmatch(s))
    assert added == policy_chars(tuple(parse(u) for u in value.split(",")))


def test_sources_at_the_budget_still_fit_iams_limit_for_the_role():
    sources = [f"s3://b{i:02d}{'x' * 60}/{'p' * 100}/" for i in range(20)]
    while policy_chars(tuple(map(parse, sources))) > POLICY_BUDGET_CHARS:
        sources.pop()
    assert len(sources) >= 5  # the budget allows a useful number of long, distinct sources
    assert inline_policy_chars(with_sources(",".join(sources))) <= IAM_ROLE_POLICY_CHARS
