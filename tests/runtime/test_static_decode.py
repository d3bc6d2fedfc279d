"""The static decode path (buckets, static buffers, masked rows) gives the eager loop's tokens, on every family."""

from __future__ import annotations

import threading

import pytest
import torch

from export.cli import parity_images
from graph_tools import RecordedCaptures
from runtime.captioner import load_captioner
from runtime.decode.beam import beam_search
from runtime.decode.cuda_graphs import StaticDecoder, StaticOptions, buckets
from runtime.decode.greedy import greedy
from runtime.decode.state import DecodeSettings
from runtime.errors import CaptionKitError, CaptureFailed
from runtime.load_policy import AOTI_ON_CUDA, refuse_aoti_on_cuda
from runtime.options import LoadOptions

FAMILIES = [
    "tiny_artifact",
    "tiny_blip_artifact",
    "tiny_trocr_artifact",
    "tiny_trocr_small_artifact",
    "tiny_florence2_artifact",
]
DIRECT = StaticOptions(capture=False)


def _captioner(request, fixture):
    return load_captioner(request.getfixturevalue(fixture), device="cpu")


def _cross(captioner, batch: int, seed: int = 5):
    pixels = captioner.preprocess(parity_images([], batch, seed=seed)).to(captioner.dtype)
    with torch.inference_mode():
        return captioner.encoder(pixels)


@torch.inference_mode()
def _eager(captioner, cross_k, cross_v, settings: DecodeSettings) -> list[list[int]]:
    search = greedy if settings.num_beams == 1 else beam_search
    return search(captioner.step, cross_k, cross_v, settings)


def _settings(captioner, beams: int) -> DecodeSettings:
    return DecodeSettings(**{**captioner.settings.__dict__, "num_beams": beams})


def _counting(step, rows_seen: list[int]):
    def counted(input_ids, *rest):
        rows_seen.append(input_ids.shape[0])
        return step(input_ids, *rest)

    return counted


def test_buckets_are_powers_of_two_capped_by_the_largest_batch():
    assert buckets(1) == (1,)
    assert buckets(8) == (1, 2, 4, 8)
    assert buckets(24) == (1, 2, 4, 8, 16, 24)
    decoder = StaticDecoder(lambda *a: None, 24, DIRECT)
    assert [decoder.bucket_size(n) for n in (1, 3, 5, 9, 17, 24)] == [1, 4, 8, 16, 24, 24]
    with pytest.raises(ValueError, match="largest bucket is 24"):
        decoder.bucket_size(25)


@pytest.mark.parametrize("fixture", FAMILIES)
@pytest.mark.parametrize("batch", [3, 5])
def test_greedy_tokens_equal_the_eager_loop(request, fixture, batch):
    captioner = _captioner(request, fixture)
    cross_k, cross_v = _cross(captioner, batch)
    settings = _settings(captioner, 1)
    expected = _eager(captioner, cross_k, cross_v, settings)
    rows_seen: list[int] = []
    decoder = StaticDecoder(_counting(captioner.step, rows_seen), captioner.max_batch, DIRECT)
    assert decoder.decode(cross_k, cross_v, settings) == expected
    assert set(rows_seen) == {decoder.bucket_size(batch)} and decoder.bucket_size(batch) > batch


@pytest.mark.parametrize("fixture", FAMILIES)
@pytest.mark.parametrize("batch", [3, 5])
def test_beam_tokens_equal_the_eager_beam_search(request, fixture, batch):
    captioner = _captioner(request, fixture)
    cross_k, cross_v = _cross(captioner, batch)
    settings = _settings(captioner, captioner.max_beams)
    expected = _eager(captioner, cross_k, cross_v, settings)
    rows_seen: list[int] = []
    decoder = StaticDecoder(_counting(captioner.step, rows_seen), captioner.max_batch, DIRECT)
    assert decoder.decode(cross_k, cross_v, settings) == expected
    assert set(rows_seen) == {decoder.bucket_size(batch) * settings.num_beams}


@pytest.mark.parametrize("beams", [1, 3])
def test_loading_a_batch_pads_the_bucket_with_finished_empty_rows(tiny_artifact, beams):
    captioner = load_captioner(tiny_artifact, device="cpu")
    decoder = StaticDecoder(captioner.step, captioner.max_batch, DIRECT)
    settings = _settings(captioner, beams)
    for batch in (7, 3):  # the second load must undo what the first left
        cross_k, cross_v = _cross(captioner, batch)
        bucket = decoder.bucket(batch, settings, cross_k)
        bucket.self_k.fill_(1.0)
        bucket.position.fill_(5)
        bucket.load(cross_k, cross_v)
        rows = batch * beams
        assert bucket.done.tolist() == [False] * rows + [True] * (bucket.done.shape[0] - rows)
        assert torch.equal(bucket.cross_k[:, :rows], cross_k.repeat_interleave(beams, dim=1))
        assert not bucket.cross_v[:, rows:].any() and not bucket.self_k.any() and int(bucket.position) == 0
        assert bucket.tokens.eq(settings.start_token_id).all()


@pytest.mark.parametrize("beams", [1, 3])
def test_rows_finishing_at_different_steps_are_masked_not_dropped(tiny_artifact, beams):
    captioner = load_captioner(tiny_artifact, device="cpu")
    cross_k, cross_v = _cross(captioner, 7)
    settings = _settings(captioner, beams)
    eager = _eager(captioner, cross_k, cross_v, settings)
    lengths = sorted({len(ids) for ids in eager})
    assert len(lengths) > 1, f"the fixture should finish rows at several steps, got lengths {lengths}"
    rows_seen: list[int] = []
    decoder = StaticDecoder(
        _counting(captioner.step, rows_seen), captioner.max_batch, StaticOptions(capture=False, eos_every=1)
    )
    assert decoder.decode(cross_k, cross_v, settings) == eager
    assert rows_seen == [8 * beams] * len(rows_seen)  # one bucket the whole way: no row left it
    if beams == 1:
        assert len(rows_seen) == max(lengths)  # checked every step: stops when the longest caption ends


@pytest.mark.parametrize("eos_every", [1, 3, 4, 100])
def test_eos_is_checked_every_k_steps(tiny_artifact, eos_every):
    captioner = load_captioner(tiny_artifact, device="cpu")
    cross_k, cross_v = _cross(captioner, 5)
    settings = _settings(captioner, 1)
    eager = _eager(captioner, cross_k, cross_v, settings)
    longest = max(len(ids) for ids in eager)
    assert longest < settings.max_new_tokens - 3, "the fixture should end every caption early"
    rows_seen: list[int] = []
    decoder = StaticDecoder(
        _counting(captioner.step, rows_seen), captioner.max_batch, StaticOptions(capture=False, eos_every=eos_every)
    )
    assert decoder.decode(cross_k, cross_v, settings) == eager
    steps = min(settings.max_new_tokens, -(-longest // eos_every) * eos_every)
    assert len(rows_seen) == steps


def test_a_bucket_reused_by_another_batch_starts_clean(tiny_artifact):
    captioner = load_captioner(tiny_artifact, device="cpu")
    decoder = StaticDecoder(captioner.step, captioner.max_batch, DIRECT)
    for batch, seed, beams in ((7, 5, 1), (5, 9, 1), (6, 3, 3), (5, 2, 3), (8, 4, 1)):
        cross_k, cross_v = _cross(captioner, batch, seed)
        settings = _settings(captioner, beams)
        expected = _eager(captioner, cross_k, cross_v, settings)
        assert decoder.decode(cross_k, cross_v, settings) == expected, (batch, seed, beams)
    assert len(decoder._buckets) == 2  # (8 images, greedy) and (8 images, 3 beams), each reused


@pytest.mark.parametrize("beams", [1, 3])
def test_captioner_takes_the_static_path_when_it_has_one(tiny_artifact, beams):
    captioner = load_captioner(tiny_artifact, device="cpu")
    assert captioner.static is None  # the CPU keeps the eager loop
    pixels = captioner.preprocess(parity_images([], 11, seed=5))  # two chunks: 8 and 3 images
    expected = captioner.generate_ids(pixels, num_beams=beams)
    rows_seen: list[int] = []
    captioner.static = StaticDecoder(_counting(captioner.step, rows_seen), captioner.max_batch, DIRECT)
    assert captioner.generate_ids(pixels, num_beams=beams) == expected
    assert set(rows_seen) == {8 * beams, 4 * beams}


def _recorded(captioner, **kwargs) -> RecordedCaptures:
    captures = RecordedCaptures(**kwargs)
    captioner.static = StaticDecoder(captioner.step, captioner.max_batch, StaticOptions(), capture=captures)
    return captures


def _eager_ids(captioner, pixels, beams=None):
    static, captioner.static = captioner.static, None
    try:
        return captioner.generate_ids(pixels, num_beams=beams)
    finally:
        captioner.static = static


def test_prepare_captures_every_bucket_on_the_calling_thread_under_the_lock_before_it_serves(tiny_artifact):
    captioner = load_captioner(tiny_artifact, device="cpu")
    captures = _recorded(captioner)
    pixels = captioner.preprocess(parity_images([], 11, seed=5))  # two chunks: 8 and 3 images
    expected = _eager_ids(captioner, pixels)
    assert captioner.decode_status() == {"decode": "eager, not prepared"}
    beams = captioner.settings.num_beams
    status = captioner.prepare()
    labels = [f"{size}x{beams}" for size in buckets(captioner.max_batch)]
    assert captures.captures() == [("capture", "MainThread", "", label, True) for label in labels]
    assert status["decode"] == "cuda-graphs" and list(status["capture_s"]) == labels
    assert captioner.generate_ids(pixels) == expected
    assert len(captures.captures()) == len(labels)  # serving made no bucket: prepare made them all
    replays = [event for event in captures.events if event[0] == "replay"]
    assert replays and captioner.static.stats.replays == len(replays) and captioner.static.stats.direct == 0


def test_only_the_thread_that_prepared_captures(tiny_artifact):
    captioner = load_captioner(tiny_artifact, device="cpu")
    captures = _recorded(captioner)
    pixels = captioner.preprocess(parity_images([], 3, seed=5))
    expected = {beams: _eager_ids(captioner, pixels, beams) for beams in (1, 3)}
    got, errors = {}, []

    def elsewhere(beams):  # a model watcher warming up a model it loaded, then the same on the prepared model
        try:
            got[beams] = captioner.generate_ids(pixels, num_beams=beams)
        except Exception as exc:  # noqa: BLE001 - the test reads it
            errors.append(exc)

    thread = threading.Thread(target=elsewhere, args=(1,), name="model-watcher")
    thread.start()
    thread.join()
    assert got[1] == expected[1] and captures.events == []  # not prepared: the eager loop, nothing captured
    captioner.prepare()
    made = len(captures.captures())
    thread = threading.Thread(target=elsewhere, args=(3,), name="model-watcher")
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], CaptureFailed) and "serving thread" in str(errors[0])
    assert len(captures.captures()) == made and captioner.static.failure is None
    assert captioner.generate_ids(pixels, num_beams=3) == expected[3]  # the serving thread makes it on first use
    assert captures.captures()[-1][1:4] == ("MainThread", "", "4x3")


def test_a_failed_capture_is_raised_and_kept_and_the_eager_loop_serves(tiny_artifact):
    captioner = load_captioner(tiny_artifact, device="cpu")
    captures = _recorded(captioner, fail_at=f"4x{captioner.settings.num_beams}")
    pixels = captioner.preprocess(parity_images([], 3, seed=5))
    expected = _eager_ids(captioner, pixels)
    with pytest.raises(CaptureFailed) as failed:
        captioner.prepare()
    assert isinstance(failed.value, CaptionKitError)
    assert str(failed.value) == (
        f"bucket 4x{captioner.settings.num_beams} (images x beams): RuntimeError: "
        "operation not permitted when stream is capturing"
    )
    assert captioner.decode_status() == {"decode": "eager, capture failed", "reason": str(failed.value)}
    assert captioner.generate_ids(pixels) == expected
    assert [event for event in captures.events if event[0] == "replay"] == [] and not captioner.static._buckets
    cross_k, cross_v = _cross(captioner, 3)
    with pytest.raises(CaptureFailed):
        captioner.static.decode(cross_k, cross_v, captioner.settings)


@pytest.mark.parametrize("fail", [False, True])
def test_the_caption_cli_captures_before_captioning_and_says_when_it_could_not(
    tiny_artifact, tmp_path, monkeypatch, capsys, fail
):
    import runtime.captioner as captioner_module
    from runtime import caption_cli

    recorded = []

    def loader(*args, **kwargs):
        captioner = load_captioner(*args, **kwargs)
        recorded.append(_recorded(captioner, fail_at="1x3" if fail else None))
        return captioner

    monkeypatch.setattr(captioner_module, "load_captioner", loader)
    path = tmp_path / "a.png"
    parity_images([], 1)[0].save(path)
    assert caption_cli.main(["--artifact", str(tiny_artifact), "--device", "cpu", "--num-beams", "3", str(path)]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 and "caption" in out
    events = recorded[0].events
    if fail:
        assert "decode: eager, capture failed" in err and "warning: decoding on the eager loop" in err
        assert "bucket 1x3 (images x beams): RuntimeError: operation not permitted" in err
        assert [event[0] for event in events] == ["capture"]
    else:
        assert "decode: cuda-graphs" in err and "warning" not in err
        assert [event[3] for event in events if event[0] == "capture"] == [f"{n}x3" for n in buckets(8)]
        assert events[len(buckets(8))][0] == "replay"


def test_aoti_is_refused_on_cuda_with_the_reason(tiny_artifact, monkeypatch):
    refuse_aoti_on_cuda("aoti", torch.device("cpu"))
    refuse_aoti_on_cuda("exported", torch.device("cuda", 0))
    with pytest.raises(ValueError, match="CPU only"):
        refuse_aoti_on_cuda("aoti", torch.device("cuda", 0))
    import runtime.captioner as captioner_module

    monkeypatch.setattr(captioner_module, "device_falling_back_to_cpu", lambda _device: torch.device("cuda", 0))
    with pytest.raises(ValueError) as refused:
        load_captioner(tiny_artifact, device="cuda", options=LoadOptions(backend="aoti"))
    assert str(refused.value) == AOTI_ON_CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("beams", [1, 3])
def test_cuda_graphs_give_the_eager_tokens(tiny_artifact, beams):
    captioner = load_captioner(tiny_artifact, device="cuda")
    assert captioner.prepare()["decode"] == "cuda-graphs"
    pixels = captioner.preprocess(parity_images([], 5, seed=5))
    graphed = captioner.generate_ids(pixels, num_beams=beams)
    assert captioner.static.stats.replays and captioner.static._buckets
    captioner.static = None
    assert graphed == captioner.generate_ids(pixels, num_beams=beams)


def _with_encoder(captioner, **kwargs) -> RecordedCaptures:
    captures = RecordedCaptures(**kwargs)
    captioner.static = StaticDecoder(
        captioner.step, captioner.max_batch, StaticOptions(), capture=captures, encoder=captioner._checked_encoder
    )
    return captures


@pytest.mark.parametrize("fixture", ["tiny_artifact", "tiny_florence2_artifact"])
def test_each_bucket_captures_its_encoder_into_its_cross_buffers_and_the_tokens_equal_the_eager_loop(request, fixture):
    captioner = _captioner(request, fixture)
    captures = _with_encoder(captioner)
    pixels = captioner.preprocess(parity_images([], 11, seed=5))  # two chunks: 8 and 3 images
    beams = captioner.settings.num_beams
    expected = {b: _eager_ids(captioner, pixels, b) for b in {1, beams}}
    status = captioner.prepare()
    labels = [f"{size}x{beams}" for size in buckets(captioner.max_batch)]
    assert [event[3] for event in captures.captures()] == [x for label in labels for x in (label, f"{label} encoder")]
    assert status["decode"] == "cuda-graphs" and status["encoder"] == "in the buckets"
    assert captioner.generate_ids(pixels) == expected[beams]
    encoded = [event[3] for event in captures.events if event[0] == "replay" and event[3].endswith("encoder")]
    assert encoded == [f"8x{beams} encoder", f"4x{beams} encoder"]  # one encoder replay a chunk, in its bucket
    assert captioner.generate_ids(pixels, num_beams=1) == expected[1]  # greedy's buckets made on first use


def test_a_bucket_whose_encoder_cannot_be_captured_serves_its_step_graphs_from_the_eager_encoder(tiny_artifact):
    captioner = load_captioner(tiny_artifact, device="cpu")
    beams = captioner.settings.num_beams
    captures = _with_encoder(captioner, fail_at=f"4x{beams} encoder")
    pixels = captioner.preprocess(parity_images([], 3, seed=5))
    expected = _eager_ids(captioner, pixels)
    status = captioner.prepare()
    assert status["decode"] == "cuda-graphs" and status["encoder"] == "eager, capture failed"
    assert status["encoder_reason"] == (
        f"bucket 4x{beams}: RuntimeError: operation not permitted when stream is capturing"
    )
    assert captioner.generate_ids(pixels) == expected
    replayed = [event[3] for event in captures.events if event[0] == "replay"]
    assert replayed and set(replayed) == {f"4x{beams}"}  # the step's graph, not an encoder graph
