"""Dataset sources: the s3://bucket/prefix/ locations outside the images prefix that dataset jobs may read."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping

MAX_SOURCES = 20
# IAM allows a role 10,240 characters of inline policies in all, white space not counted (IAM and AWS STS quotas,
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html); the rest of the workers' policies
# render to about 4,400 with every token at its longest (tests/stacks/test_stack_dataset_sources.py)
POLICY_BUDGET_CHARS = 5_000
LONGEST_PARTITION = "aws-us-gov"
# S3 bucket naming rules (3-63 lower-case letters, digits, '.' and '-', a letter or digit at each end)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# S3's "safe" key characters without '*': '*' and '?' are wildcards in an IAM resource ARN and in StringLike,
# '$' opens a policy variable; a prefix with one would grant more than it names
_PREFIX = re.compile(r"(?:[A-Za-z0-9!_.'()-][A-Za-z0-9!_.'()/-]*/)?")


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """One `s3://bucket/prefix/` (prefix "" for the whole bucket)."""

    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def covers(self, other: DatasetSource) -> bool:
        """True when every key of `other` is also under this source."""
        return self.bucket == other.bucket and other.prefix.startswith(self.prefix)


def parse(uri: str) -> DatasetSource | None:
    """The source `uri` names, or None when it is not `s3://bucket/` or `s3://bucket/prefix/` with safe characters."""
    bucket, slash, prefix = uri.removeprefix("s3://").partition("/")
    if (
        not uri.startswith("s3://")
        or not slash
        or not _BUCKET.fullmatch(bucket)
        or ".." in bucket
        or not _PREFIX.fullmatch(prefix)
    ):
        return None
    return DatasetSource(bucket, prefix)


def form_problems(uris: tuple[str, ...]) -> Iterator[str]:
    """What is wrong with the setting's form: count, each URI's shape, and sources that repeat one another."""
    if len(uris) > MAX_SOURCES:
        yield (
            f"dataset_sources has {len(uris)} entries: at most {MAX_SOURCES} (each adds to the workers' IAM "
            "policy); list a common parent prefix instead"
        )
    sources = []
    for uri in uris:
        source = parse(uri)
        if source is None:
            yield (
                f"dataset_sources: {uri!r} is not s3://bucket/ or s3://bucket/prefix/ (a valid bucket name; a "
                "prefix with no leading '/', ending in '/', without '*', '?' or '$', which IAM would read as "
                "wildcards or variables)"
            )
            continue
        inside = next((s for s in sources if s.covers(source) or source.covers(s)), None)
        if inside is not None:
            yield f"dataset_sources: {uri!r} overlaps {inside.uri!r}: list each location once (the wider one)"
        sources.append(source)
    if len(sources) == len(uris) and policy_chars(tuple(sources)) > POLICY_BUDGET_CHARS:
        yield (
            f"dataset_sources would add {policy_chars(tuple(sources))} characters to the workers' IAM policies, "
            f"over the {POLICY_BUDGET_CHARS} left of IAM's 10,240 per role: list fewer, shorter prefixes (a "
            "common parent prefix, or fewer buckets)"
        )


def statements(sources: tuple[DatasetSource, ...], partition: str) -> list[dict]:
    """The IAM statements (policy JSON) that let the workers read `sources` and nothing beside them.

    GetObject on each source's objects. ListBucket is a bucket-level action, whose Resource cannot hold a prefix,
    so the `s3:prefix` condition key (the Prefix parameter of the list request) limits what may be listed, as the
    AWS docs show ("Bucket policy examples using condition keys",
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/amazon-s3-policy-keys.html; the key in
    https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html). A request without a
    Prefix has no s3:prefix, which StringLike does not match: denied, except on a whole-bucket source, whose
    statement has no condition. One list statement per bucket: a condition holds for every resource it names.
    """
    if not sources:
        return []
    arn = f"arn:{partition}:s3:::"
    found = [_statement("ReadDatasets", "s3:GetObject", sorted(f"{arn}{s.bucket}/{s.prefix}*" for s in sources))]
    prefixes: dict[str, list[str]] = {}
    for source in sources:
        prefixes.setdefault(source.bucket, []).append(source.prefix)
    for index, (bucket, listed) in enumerate(prefixes.items()):
        statement = _statement(f"ListDatasetBucket{index}", "s3:ListBucket", [f"{arn}{bucket}"])
        if "" not in listed:  # form_problems refuses a prefix beside its whole bucket (it repeats the grant)
            statement["Condition"] = {"StringLike": {"s3:prefix": _one_or_list([f"{p}*" for p in listed])}}
        found.append(statement)
    return found


def policy_chars(sources: tuple[DatasetSource, ...]) -> int:
    """The characters (white space not counted, as IAM counts) that `statements` add in the longest partition."""
    found = statements(sources, LONGEST_PARTITION)
    return sum(len(json.dumps(s, separators=(",", ":"))) + 1 for s in found)  # each with its comma in the list


def _statement(sid: str, action: str, resources: list[str]) -> dict:
    return {"Sid": sid, "Effect": "Allow", "Action": action, "Resource": _one_or_list(resources)}


def _one_or_list(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def own_bucket_problems(
    uris: tuple[str, ...], *, own: Mapping[str, str], images_logical_id: str, results_prefix: str
) -> Iterator[str]:
    """Sources that name one of this stack's own buckets, other than the images bucket outside its results.

    The stack's buckets get CloudFormation-generated names, `<stack name>-<logical id>-<random>` in lower case,
    known only after deploy: a name is recognised by its logical id. `own` maps logical id -> what the bucket holds.
    """
    for uri in uris:
        source = parse(uri)
        if source is None:
            continue
        for logical_id, holds in own.items():
            if f"-{logical_id.lower()}-" not in source.bucket:
                continue
            if logical_id != images_logical_id:
                yield (
                    f"dataset_sources: {uri!r} is this stack's {holds} bucket: workers read only its own "
                    "prefixes there; name a bucket that holds datasets"
                )
            elif source.prefix.startswith(results_prefix) or results_prefix.startswith(source.prefix):
                yield (
                    f"dataset_sources: {uri!r} overlaps the results prefix {results_prefix!r} of the images "
                    "bucket: captions would be read back as a dataset; name a prefix beside it, like "
                    "'datasets/'"
                )
