"""Checkov acknowledgements in the template: exactly the reviewed ones, each with a reason a reviewer can check."""

import re

REVIEWED = {  # (resource type, readable part of its logical id, check id)
    ("AWS::S3::Bucket", "StorageAccessLogs", "CKV_AWS_18"),  # the log bucket does not log into itself
    ("AWS::S3::Bucket", "StorageAccessLogs", "CKV_AWS_21"),  # logs are written once, never overwritten
    ("AWS::S3::Bucket", "StorageImages", "CKV_AWS_21"),  # results are rewritten idempotently; see storage.py
    ("AWS::SQS::Queue", "Jobs", "CKV_AWS_27"),  # SSE-SQS is on: a false positive
    ("AWS::SQS::Queue", "JobsDeadLetters", "CKV_AWS_27"),
    ("AWS::SQS::Queue", "WakeFailures", "CKV_AWS_27"),
    ("AWS::Lambda::Function", "WakeFunction", "CKV_AWS_117"),  # no VPC: it calls one AWS API, the VPC has no NAT
    ("AWS::Lambda::Function", "WakeFunction", "CKV_AWS_173"),  # two non-secret environment variables
    ("AWS::Lambda::Function", "BucketNotificationsHandler", "CKV_AWS_115"),  # CDK's own deploy-time handler
    ("AWS::Lambda::Function", "BucketNotificationsHandler", "CKV_AWS_116"),
    ("AWS::Lambda::Function", "BucketNotificationsHandler", "CKV_AWS_117"),
}


def skips(template):
    for logical_id, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            yield logical_id, resource["Type"], skip


def readable(logical_id):
    """The logical id without CDK's hash suffix (8 hex digits; a singleton's id adds 32 lower-case ones)."""
    return re.sub(r"([0-9a-f]{32})?[0-9A-F]{8}$", "", logical_id)


def test_only_the_reviewed_checks_are_skipped(synthesized):
    found = {(kind, readable(logical_id), skip["id"]) for logical_id, kind, skip in skips(synthesized.template)}
    assert found == REVIEWED


def test_every_skip_names_a_check_and_gives_a_reason(synthesized):
    for logical_id, _, skip in skips(synthesized.template):
        assert set(skip) == {"id", "comment"} and re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), (logical_id, skip)
        assert len(skip["comment"]) >= 80 and "TODO" not in skip["comment"], (logical_id, skip)


def test_what_was_fixed_stays_fixed(synthesized):
    skipped = {skip["id"] for _, _, skip in skips(synthesized.template)}
    assert not skipped & {"CKV_AWS_26", "CKV_AWS_158", "CKV_AWS_111"}  # topics, log groups, IAM write access
