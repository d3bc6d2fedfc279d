"""The roofline benchmark: FLOPs and bytes counted as dispatched, set against limits timed in the same rotation."""

from __future__ import annotations

import pytest
import torch

from bench import roofline
from bench.report import render


def test_a_matmul_is_counted_as_two_flops_per_multiply_add_and_its_operands_bytes():
    a, b = torch.randn(4, 8), torch.randn(8, 16)
    flops, read = roofline.counted(lambda: torch.mm(a, b))
    assert flops == 2 * 4 * 8 * 16
    assert read == (4 * 8 + 8 * 16) * 4
    assert roofline.counted(lambda: torch.relu(a)) == (0, 0)


def test_a_packed_linear_is_counted_as_the_linear_it_stands_for():
    from runtime.passes.decode_layout import _pack, decode_linear

    x, w, b = torch.randn(8, 1, 64), torch.randn(32, 64), torch.randn(32)
    flops, read = roofline.counted(lambda: decode_linear(x, w, b, _pack(w)))
    assert flops == roofline.counted(lambda: torch.nn.functional.linear(x, w, b))[0] == 2 * 8 * 64 * 32
    assert read >= (8 * 64 + 32 * 64) * 4  # the activations and the weight, whatever its layout


def test_each_case_gets_its_work_its_times_and_its_share_of_the_limits_measured_beside_it(tiny_artifact):
    rows = roofline.caption_work(tiny_artifact, batches=[2], beams=[1, 2], runs=1, mm_n=128, copy_mib=4)
    assert set(rows) == {"greedy@batch2", "beam2@batch2"}
    greedy, beams = rows["greedy@batch2"], rows["beam2@batch2"]
    assert greedy["encoder_flops"] == beams["encoder_flops"] > 0
    assert beams["decode_flops"] > greedy["decode_flops"] > 0  # two rows a step per image instead of one
    for row in rows.values():
        assert {"encoder", "caption", "mm", "copy", "read"} <= set(row["timing"])
        assert row["decode_of_read"] == pytest.approx(row["decode_gb_s"] / row["read_gb_s"], rel=0.02, abs=1e-3)
        # the share is of the unrounded rates; the shown ones carry three significant figures each
        assert row["encoder_of_peak"] == pytest.approx(row["encoder_gflops"] / row["peak_gflops"], rel=0.02, abs=1e-3)
        assert row["decode_mib_per_step"] > 0 and row["steps"] >= 1 and row["images_per_s"] > 0
    table = roofline.table({"dtypes": {"float32": {"cases": rows}}})
    assert len(table) == 2 + 2 and table[2].startswith("| float32 | greedy@batch2 |")
    assert (
        f"({rows['greedy@batch2']['decode_of_bandwidth']:.0%} / {rows['greedy@batch2']['decode_of_read']:.0%})"
        in table[2]
    )
    dtypes = {"float32": {"ceiling": roofline.ceiling("float32"), "cases": rows}}
    section = {"model": "tiny", "runs": 1, "dtypes": dtypes}
    appendix = render({"results.json": {"roofline_tiny": section}})
    assert "### CPU against its limit" in appendix and appendix.count("| float32 | beam2@batch2 |") == 1
