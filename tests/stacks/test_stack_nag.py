"""cdk-nag AwsSolutions: no unacknowledged finding, and every acknowledgement is real and explained."""

import json
from pathlib import Path

import aws_cdk as cdk
import pytest

from stacks import app as app_module
from stacks.synth import synthesize
from tools.paths import REPO

EVERY_OPTION = (
    ("alarm_email", "ops@example.com"),
    ("spot", "true"),
    ("instance_types", "g5.xlarge,g6.xlarge"),
    ("dataset_sources", "s3://laion-shards/train/,s3://coco-parquet/,s3://laion-shards/val/"),
)
PREFIX = "Annotation::"


def acknowledgements(assembly_dir: Path) -> dict[tuple[str, str], str]:
    """{(construct path, rule id): reason} from the cloud assembly's metadata."""
    found = {}
    for name in assembly_dir.glob("*.metadata.json"):
        for path, entries in json.loads(name.read_text()).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    found.update(
                        {
                            (path, rule): reason
                            for rule, reason in entry["data"].items()
                            if rule.startswith(PREFIX + "AwsSolutions-")
                        }
                    )
    return found


def findings_without_acknowledgements(tmp_path, monkeypatch) -> set[tuple[str, str]]:
    """Synthesize with every acknowledgement dropped; return the (construct path, rule) findings."""
    monkeypatch.setattr(cdk.Validations, "acknowledge", lambda self, *rules: None)
    context = {**json.loads((REPO / "cdk.json").read_text())["context"], **dict(EVERY_OPTION)}
    app = cdk.App(context=context, outdir=str(tmp_path), builtin_cloud_formation_validation=False)
    app_module.build(app, nag=True)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    return {
        (c["constructPath"], v["ruleName"])
        for r in report["pluginReports"]
        for v in r["violations"]
        for c in v["violatingConstructs"]
    }


@pytest.mark.parametrize(
    "overrides", [(), EVERY_OPTION, (("warm_pool", "true"),)], ids=["defaults", "spot-and-email", "warm-pool"]
)
def test_aws_solutions_checks_pass(overrides):
    synthesize(overrides, nag=True)  # cdk-nag 3 raises at synth on any unacknowledged finding


def test_every_acknowledgement_matches_a_real_finding(tmp_path, monkeypatch):
    acknowledged = acknowledgements(synthesize(EVERY_OPTION, nag=True).assembly_dir)
    findings = findings_without_acknowledgements(tmp_path, monkeypatch)
    assert findings, "dropping the acknowledgements must bring findings back"
    for path, rule in acknowledged:
        rule_id = rule.removeprefix(PREFIX)
        assert any(f_rule == rule_id and f_path.startswith(path.lstrip("/")) for f_path, f_rule in findings), rule
    for f_path, f_rule in findings:
        assert any(
            f_rule == rule.removeprefix(PREFIX) and f_path.startswith(path.lstrip("/")) for path, rule in acknowledged
        ), (f_path, f_rule)


def test_every_acknowledgement_gives_a_reviewer_a_reason():
    reasons = acknowledgements(synthesize(EVERY_OPTION, nag=True).assembly_dir)
    assert len(reasons) >= 8
    for (path, rule), reason in reasons.items():
        assert len(reason) >= 60 and "TODO" not in reason, (path, rule, reason)
