"""The CPU settings benchmark: a row per setting and format, float32 agreeing with itself, near-ties by the gate."""

from __future__ import annotations

import json

from bench import cpu_settings
from bench.report import render
from demo.accuracy import held_back
from export.parity import parted_at_near_tie
from runtime.captioner import load_captioner
from runtime.decode.state import Trace


def test_each_setting_gets_an_accuracy_a_comparison_with_float32_and_a_speed_ratio(tiny_artifact, tmp_path, capsys):
    out = tmp_path / "results.json"
    code = cpu_settings.main(
        [
            "--artifact",
            str(tiny_artifact),
            "--bf16-artifact",
            str(tmp_path / "absent.pt2"),
            "--images",
            "8",
            "--runs",
            "1",
            "--formats",
            "png",
            "--out",
            str(out),
            "--section",
            "cpu_settings_tiny",
        ]
    )
    assert code == 0
    section = json.loads(out.read_text())["cpu_settings_tiny"]
    assert set(section["settings"]) == {"float32", "int8", "fp16"}
    assert section["machine_before"]["loadavg_1_5_15"] and section["runs"] == 1
    for row in section["settings"].values():
        cell = row["formats"]["png"]
        assert 0 <= cell["exact_match"] <= 1 and cell["images"] == 8
        assert 0 <= cell["near_ties"] <= cell["differ_from_float32"] <= 8
        assert cell["real_differences"] == cell["differ_from_float32"] - cell["near_ties"]
        assert cell["traced_equals_served"] and cell["images_per_s"] > 0 and row["ratio_to_float32"]["png"] > 0
    float32 = section["settings"]["float32"]
    assert float32["formats"]["png"]["differ_from_float32"] == 0 and float32["ratio_to_float32"]["png"] == 1.0
    printed = capsys.readouterr()
    lines = printed.out.strip().splitlines()
    assert lines[0].split()[:2] == ["setting", "format"] and len(lines) == 1 + 3
    assert "bfloat16 skipped" in printed.err
    appendix = render({"results.json": json.loads(out.read_text())})
    assert "### Which CPU setting" in appendix and appendix.count("| float32 | png |") == 1


def test_the_trace_covers_every_image_when_they_span_several_decode_chunks(tiny_artifact):
    captioner = load_captioner(tiny_artifact, device="cpu")
    pictures, _ = held_back(captioner.max_batch + 3, seed=5, fmt="png")
    pixels = captioner.preprocess(pictures)
    ids, trace = cpu_settings.traced(captioner, pixels)
    assert ids == captioner.generate_ids(pixels)
    assert [len(g) for g in trace.gaps] == [len(i) for i in ids]


def test_a_difference_is_a_near_tie_only_if_a_step_up_to_where_captions_part_was_within_tolerance():
    trace = Trace(gaps=[[2.0, 1e-4, 3.0]], top=[[[(1, 9.0)], [(2, 9.0)], [(3, 9.0)]]])
    assert parted_at_near_tie(trace, 0, 1, "float32")
    assert not parted_at_near_tie(trace, 0, 0, "float32")  # the close step comes after the captions parted
    assert not parted_at_near_tie(Trace(gaps=[[2.0, 0.04]], top=[[[(1, 9.0)], [(2, 9.0)]]]), 0, 1, "float32")
    assert parted_at_near_tie(Trace(gaps=[[2.0, 0.04]], top=[[[(1, 9.0)], [(2, 9.0)]]]), 0, 1, "bfloat16")
