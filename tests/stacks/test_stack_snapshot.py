"""Snapshot of the synthesized template, so any template change shows up in review as a snapshot diff."""

import difflib
import json
import os
import re
from pathlib import Path

from stacks.synth import synthesize

SNAPSHOT = Path(__file__).parent / "snapshots" / "CaptionKit.template.json"
UPDATE = "UPDATE_SNAPSHOTS"


def normalized(template: dict) -> str:
    """The template as stable text: asset hashes (they change with every runtime/ edit) are masked."""
    text = json.dumps(template, indent=1, sort_keys=True)
    return re.sub(r"\b[0-9a-f]{64}\b", "<asset-hash>", text) + "\n"


def test_template_matches_the_reviewed_snapshot():
    actual = normalized(synthesize().template)
    if os.environ.get(UPDATE) == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(actual)
    expected = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    diff = "".join(
        difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), "snapshot", "synthesized", n=2)
    )
    assert actual == expected, (
        f"the template changed; if intended, run `{UPDATE}=1 python -m pytest "
        f"tests/stacks/test_stack_snapshot.py` and commit the snapshot:\n{diff[:6000]}"
    )


def test_snapshot_does_not_depend_on_the_runtime_code():
    assert "<asset-hash>" in normalized(synthesize().template)
    assert not re.search(r"\b[0-9a-f]{64}\b", SNAPSHOT.read_text())
