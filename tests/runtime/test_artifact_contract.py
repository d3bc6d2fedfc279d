"""A manifest or program outside the runtime's contract is refused before anything runs, naming what is wrong: at
every load (the manifest's sizes and decoding values) and at `make upload` (both programs run on the meta device at
both batch ends: every intermediate sized, every output held to runtime.artifact.contract, the token ids to the
step's vocabulary). The attacker recomputes the manifest's checksums (artifact_tools.forge)."""

from __future__ import annotations

import pytest
import torch

import artifact_tools
from artifact_tools import refused
from runtime.artifact.verify import check_artifact, verify
from runtime.captioner import load_captioner
from runtime.errors import ArtifactError


@pytest.mark.parametrize(
    "field, value",
    [("max_batch", 10**9), ("image_size", [1 << 20, 1 << 20]), ("dtype", "__class__"), ("cache", {"layers": "x"})],
)
def test_manifest_sizes_outside_what_export_writes_are_refused(field, value, tiny_artifact, tmp_path):
    forged = artifact_tools.rewrite_manifest(tiny_artifact, tmp_path / "m.pt2", **{field: value})
    refused(forged, "outside what CaptionKit writes")


@pytest.mark.parametrize(
    "change",
    [
        {"length_penalty": 1e308},  # cur ** 1e308 overflows Python's float in the beam search
        {"length_penalty": "1.0"},
        {"length_penalty": True},
        {"early_stopping": "sometimes"},
        {"start_token_id": -1},
        {"eos_token_id": 1 << 40},
        {"forced_bos_token_id": "0"},
        {"forced_eos_token_id": 2.0},
    ],
)
def test_generation_values_outside_what_export_writes_are_refused(change, tiny_artifact, tmp_path):
    manifest = check_artifact(tiny_artifact).manifest
    forged = artifact_tools.rewrite_manifest(
        tiny_artifact, tmp_path / "g.pt2", generation={**manifest["generation"], **change}
    )
    refused(forged, "outside what CaptionKit writes")


def test_the_size_check_runs_every_intermediate_on_meta_at_both_batch_ends(tiny_artifact):
    checked = check_artifact(tiny_artifact, sizes=True)  # the legitimate artifact passes
    assert set(checked.programs) == {"encoder", "decoder_step"}
    import runtime.artifact.verify as artifact_module

    with pytest.raises(ArtifactError, match="live tensors|bytes alive at once"):
        artifact_module._check_sizes(checked, limit=1024)


def _encoder_returns_a_weight(d):
    nodes = d["programs"]["encoder"]["nodes"]
    weight = next(n for n in nodes if n["op"] == "get_attr")
    nodes[-1]["args"][0]["tuple"][0] = {"node": weight["name"]}


def _step_returns_its_cache_as_logits(d):
    output = d["programs"]["decoder_step"]["nodes"][-1]
    output["args"][0]["tuple"][0] = output["args"][0]["tuple"][1]


@pytest.mark.parametrize(
    "edit, refusal",
    [
        (
            _encoder_returns_a_weight,
            r"program encoder output 0 \(cross_k\): float32 \[.*\], the runtime takes "
            r"\[layers, batch, heads, seq, head_dim\]",
        ),
        (
            _step_returns_its_cache_as_logits,
            r"program decoder_step output 0 \(logits\): float32 \[2, 1, 4, 11, 8\], "
            r"the runtime takes floating-point \[rows, vocab\] \(1 rows\)",
        ),
    ],
)
def test_upload_refuses_outputs_outside_the_runtimes_contract_naming_program_and_mismatch(
    edit, refusal, tiny_artifact, tmp_path
):
    from runtime import registry

    class NoS3:
        def __getattr__(self, name):
            pytest.fail(f"s3.{name} called for a refused artifact")

    forged = artifact_tools.forge(tiny_artifact, tmp_path / "contract.pt2", graphs=edit)
    with pytest.raises(ArtifactError, match=refusal):
        verify(forged)
    with pytest.raises(ArtifactError, match=refusal):
        registry.publish(NoS3(), "bucket", forged)


def test_upload_refuses_token_ids_outside_the_steps_vocabulary(tiny_artifact, tmp_path):
    generation = check_artifact(tiny_artifact).manifest["generation"]
    forged = artifact_tools.rewrite_manifest(
        tiny_artifact, tmp_path / "ids.pt2", generation={**generation, "forced_bos_token_id": 1_000_000}
    )
    check_artifact(forged)  # a well-typed id: only the step's vocabulary says it is out of range
    with pytest.raises(ArtifactError, match=r"forced_bos_token_id 1000000, outside the step's vocabulary of \d+"):
        verify(forged)


def test_a_cuda_load_of_a_file_no_pointer_vouches_for_runs_uploads_check_first(tiny_artifact, tmp_path, monkeypatch):
    import runtime.artifact.verify as verify_module
    import runtime.captioner as captioner_module

    generation = check_artifact(tiny_artifact).manifest["generation"]
    forged = artifact_tools.rewrite_manifest(
        tiny_artifact, tmp_path / "ids.pt2", generation={**generation, "start_token_id": 1_000_000}
    )
    load_captioner(forged, "cpu")  # on the CPU an index past a table is a Python error at the first batch
    # as on a CUDA machine, without one: the device is CUDA, its memory this machine's
    monkeypatch.setattr(captioner_module, "device_falling_back_to_cpu", lambda _device: torch.device("cuda", 0))
    monkeypatch.setattr(verify_module, "memory_limit", lambda _device: 1 << 34)
    with pytest.raises(ArtifactError, match=r"start_token_id 1000000, outside the step's vocabulary"):
        load_captioner(forged, "cuda")  # refused before anything is sent to the device
    # a file the model pointer names by its SHA-256 was checked so at upload: its load does not run it again
    asked = []

    def spy(*args, sizes=False, **kwargs):
        asked.append(sizes)
        raise ArtifactError("stop before the device")

    monkeypatch.setattr(captioner_module, "check_artifact", spy)
    with pytest.raises(ArtifactError, match="stop before the device"):
        load_captioner(forged, "cuda", expected_sha256=check_artifact(forged).sha256)
    with pytest.raises(ArtifactError, match="stop before the device"):
        load_captioner(forged, "cuda")
    assert asked == [False, True]


def test_upload_refuses_a_manifest_dtype_the_programs_do_not_take(tiny_artifact, tmp_path):
    forged = artifact_tools.rewrite_manifest(tiny_artifact, tmp_path / "dtype.pt2", dtype="float16")
    with pytest.raises(ArtifactError, match="program encoder"):
        verify(forged)


def test_an_encoder_output_outside_the_contract_stops_the_first_batch_in_one_line_not_a_traceback(
    tiny_artifact, tmp_path
):
    forged = artifact_tools.forge(tiny_artifact, tmp_path / "out.pt2", graphs=_encoder_returns_a_weight)
    from export.cli import parity_images

    captioner = load_captioner(forged, "cpu")  # a load counts inputs and outputs; shapes are upload's meta run
    with pytest.raises(ArtifactError, match=r"program encoder output 0 \(cross_k\)"):
        captioner.caption(parity_images([], 1, seed=3))
    out = artifact_tools.caption_cli(forged, tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "caption: the model failed on" in out.stderr and "program encoder output 0 (cross_k)" in out.stderr
