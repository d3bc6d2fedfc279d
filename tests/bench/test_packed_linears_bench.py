"""The packed-linears benchmark: one artifact loaded with and without oneDNN-packed decode weights, in rotation."""

from __future__ import annotations

import pytest

from bench import packed_linears
from bench.report import render
from runtime.passes.decode_layout import packed_linears as can_pack


@pytest.mark.skipif(not can_pack(), reason="this torch has no oneDNN linear packing")
def test_each_case_is_timed_both_ways_with_its_captions_compared_and_rendered(tiny_artifact):
    cases = packed_linears.run(tiny_artifact, batches=[3], beams=[1, 2], runs=1)
    assert set(cases) == {"greedy@batch3", "beam2@batch3"}
    for row in cases.values():
        assert set(row["timing"]) == {"unpacked", "packed"} and row["speedup"] > 0
        assert 0 <= row["captions_equal"] <= row["images"] == 3  # counted; parity is test_decode_layout's
    section = {"artifact": "tiny.pt2", "runs": 1, "cases": cases}
    appendix = render({"results.json": {"packed_linears_tiny": section}})
    assert "Decode linears on oneDNN-packed weights" in appendix and appendix.count("| beam2@batch3 |") == 1
