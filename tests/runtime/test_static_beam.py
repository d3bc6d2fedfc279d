"""Beam search inside the captured tick (runtime.decode.cuda_graphs_beam): the eager loop's tokens under every
setting the bookkeeping reads, and a tick that never makes the host wait, rehearsed on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from export.cli import parity_images
from runtime.captioner import load_captioner
from runtime.decode.beam import beam_search
from runtime.decode.cuda_graphs import StaticDecoder, StaticOptions
from runtime.decode.greedy import greedy
from runtime.decode.state import DecodeSettings

# ops that read a device value back to the host, size an output by the data or copy from the host: each syncs a
# CUDA stream or is refused under a capture (or records a value that the replays then reuse)
HOST_READS = {
    "aten._local_scalar_dense",
    "aten.item",
    "aten.is_nonzero",
    "aten.nonzero",
    "aten.equal",
    "aten.masked_select",
    "aten.unique",
    "aten._unique2",
    "aten.unique_consecutive",
    "aten.repeat_interleave",
    "aten._assert_async",
    # a tensor made from Python values in the tick: on CUDA a copy from pageable host memory, refused under capture
    "aten.lift_fresh",
    # a tensor moved between devices in the tick (`.to(device)`): a host copy on CUDA
    "aten.to.device",
    "aten.to.dtype_layout",
}


def _inputs(captioner, batch: int, seed: int = 5):
    pixels = captioner.preprocess(parity_images([], batch, seed=seed)).to(captioner.dtype)
    with torch.inference_mode():
        return captioner.encoder(pixels)


def _with(captioner, **changes) -> DecodeSettings:
    return DecodeSettings(**{**captioner.settings.__dict__, **changes})


@torch.inference_mode()
def _eager(captioner, cross_k, cross_v, settings):
    search = greedy if settings.num_beams == 1 else beam_search
    return search(captioner.step, cross_k, cross_v, settings)


def test_every_setting_the_bookkeeping_reads_gives_the_eager_tokens(tiny_artifact):
    captioner = load_captioner(tiny_artifact, device="cpu")
    cross_k, cross_v = _inputs(captioner, 5)
    decoder = StaticDecoder(captioner.step, captioner.max_batch, StaticOptions(capture=False, eos_every=2))
    seen = set()
    for length_penalty, early_stopping, beams in (
        (1.0, False, 3),
        (0.6, True, 3),
        (2.0, "never", 3),
        (-0.5, False, 2),
        (0.0, "never", 4),
        (1.3, True, 4),
    ):
        settings = _with(captioner, num_beams=beams, length_penalty=length_penalty, early_stopping=early_stopping)
        expected = _eager(captioner, cross_k, cross_v, settings)
        assert decoder.decode(cross_k, cross_v, settings) == expected, settings
        seen.add(repr(expected))
    assert len(seen) > 2, "the settings should change some captions, else this test checks one of them"


class _Phases(TorchDispatchMode):
    """Every aten op dispatched, with the phase it ran in: "tick" inside a bucket's replay, "host" elsewhere."""

    def __init__(self):
        super().__init__()
        self.phase, self.ops, self.replays = "host", [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append((self.phase, func._overloadpacket._qualified_op_name.replace("::", ".")))
        return func(*args, **(kwargs or {}))


def _capture_in(phases: _Phases):
    def capture(tick, reset, warmup):
        reset()

        def replay():
            phases.phase, phases.replays = "tick", phases.replays + 1
            try:
                tick()
            finally:
                phases.phase = "host"

        return replay

    return capture


@pytest.mark.parametrize("fixture", ["tiny_artifact", "tiny_florence2_artifact", "tiny_trocr_small_artifact"])
@pytest.mark.parametrize("beams", [1, 3])
def test_a_tick_never_waits_on_the_host_and_nothing_runs_between_ticks_but_the_eos_check(request, fixture, beams):
    captioner = load_captioner(request.getfixturevalue(fixture), device="cpu")
    cross_k, cross_v = _inputs(captioner, 5)
    settings = _with(captioner, num_beams=beams)
    expected = _eager(captioner, cross_k, cross_v, settings)
    phases = _Phases()
    decoder = StaticDecoder(
        captioner.step, captioner.max_batch, StaticOptions(eos_every=2), capture=_capture_in(phases)
    )
    decoder.prepare(settings, cross_k)  # every bucket made (and "captured") before the recording starts
    with phases:
        got = decoder.decode(cross_k, cross_v, settings)
    assert got == expected

    ticks = [i for i, (phase, _) in enumerate(phases.ops) if phase == "tick"]
    assert ticks, "no tick was replayed"
    in_ticks = {op for phase, op in phases.ops if phase == "tick"}
    assert not in_ticks & HOST_READS, f"a tick reads the device from the host: {sorted(in_ticks & HOST_READS)}"
    between = [op for phase, op in phases.ops[ticks[0] : ticks[-1]] if phase == "host"]
    assert set(between) <= {"aten.all", "aten.is_nonzero"}, sorted(set(between))  # bool(done.all())
    # the detector sees host reads where there are some: the host's "is every row done?" after every 2nd tick
    assert between.count("aten.is_nonzero") == (phases.replays - 1) // 2 > 0
