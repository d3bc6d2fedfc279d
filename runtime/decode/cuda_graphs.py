"""Decoding on fixed batch buckets with static device buffers, each bucket's step replayed as one CUDA graph."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from runtime.decode.cuda_graphs_beam import BeamBuffers, beam_search_static
from runtime.decode.state import DecodeSettings, Step
from runtime.errors import CaptureFailed

# One per process: every capture and every decode (runtime.captioner) holds it, whichever model it belongs to.
DEVICE_LOCK = threading.RLock()


def buckets(max_items: int) -> tuple[int, ...]:
    """Batch sizes a bucket is made for: powers of two below `max_items`, and `max_items` itself."""
    sizes, size = [], 1
    while size < max_items:
        sizes.append(size)
        size *= 2
    return (*sizes, max_items)


@dataclass(frozen=True)
class StaticOptions:
    """`eos_every`: steps between the host's checks that every row is done; `capture`: CUDA graphs (else the step
    is called directly); `warmup`: eager runs on a side stream before a capture."""

    eos_every: int = 4
    capture: bool = True
    warmup: int = 2


# (tick, reset, warmup) -> replay: makes one bucket's tick replayable (CudaGraphs; the tests inject their own)
Capture = Callable[[Callable[[], None], Callable[[], None], int], Callable[[], None]]
# pixels -> (cross_k, cross_v): the model's encoder, its outputs checked against the manifest (shapes only)
Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _nothing() -> None:
    """The encoder's tick has no state to reset between warm-up and capture: it rewrites everything it writes."""


class CudaGraphs:
    """The capture on CUDA: a tick warmed up on a side stream, then captured as a CUDA graph in thread-local error
    mode, all of a decoder's graphs in one memory pool; returns the graph's `replay`."""

    def __init__(self):
        self.pool = None

    def __call__(self, tick: Callable[[], None], reset: Callable[[], None], warmup: int) -> Callable[[], None]:
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                reset()
                tick()
        torch.cuda.current_stream().wait_stream(side)
        reset()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            tick()
        return graph.replay


@dataclass
class GraphStats:
    """What a decoder made and ran: seconds per bucket made ("<images>x<beams>"), ticks replayed from a capture,
    ticks called directly (no capture), and the buckets whose encoder could not be captured (their step graphs serve,
    fed by the eager encoder)."""

    capture_s: dict[str, float] = field(default_factory=dict)
    replays: int = 0
    direct: int = 0
    encoder_failed: dict[str, str] = field(default_factory=dict)  # bucket -> why its encoder was not captured


class Tick:
    """One decode step of a bucket: its captured replay, or, without a capture, the step itself; counted."""

    def __init__(self, fn: Callable[[], None], replay: Callable[[], None] | None, stats: GraphStats):
        self.fn, self.replay, self.stats = fn, replay, stats

    def __call__(self) -> None:
        if self.replay is None:
            self.fn()
            self.stats.direct += 1
        else:
            self.replay()
            self.stats.replays += 1


class Bucket:
    """The static tensors of one bucket (`items` images x `settings.num_beams` rows) and its captured tick."""

    def __init__(
        self,
        step: Step,
        items: int,
        settings: DecodeSettings,
        cross: torch.Tensor,
        options: StaticOptions,
        capture: Capture | None,
        stats: GraphStats,
        encoder: Encoder | None = None,
        pixels: torch.Tensor | None = None,
    ):
        self.step, self.items, self.settings = step, items, settings
        layers, _, heads, seq, head_dim = cross.shape
        rows, self.device = items * settings.num_beams, cross.device
        float_, long_ = dict(dtype=cross.dtype, device=self.device), dict(dtype=torch.long, device=self.device)
        self.self_k = torch.zeros((layers, rows, heads, settings.max_new_tokens, head_dim), **float_)
        self.self_v = torch.zeros_like(self.self_k)
        self.cross_k = torch.zeros((layers, rows, heads, seq, head_dim), **float_)
        self.cross_v = torch.zeros_like(self.cross_k)
        self.tokens = torch.full((rows,), settings.start_token_id, **long_)
        self.position = torch.zeros(1, **long_)
        self.parent = torch.arange(rows, **long_)  # beam search: the cache row each row continues
        self.done = torch.zeros(rows, dtype=torch.bool, device=self.device)
        self.out = torch.full((rows, settings.max_new_tokens), settings.eos_token_id, **long_)
        self.beams = BeamBuffers(items, settings, self.device) if settings.num_beams > 1 else None
        tick = self._greedy_tick if settings.num_beams == 1 else self._beam_tick
        self.tick = Tick(tick, None if capture is None else capture(tick, self._reset_state, options.warmup), stats)
        # the encoder on this bucket's own pixel buffer, writing its keys/values straight into the cross buffers
        self.encoder, self.encode, self.encoder_failure = encoder, None, None
        if encoder is not None and pixels is not None:
            self.pixels = torch.zeros((items, *pixels.shape[1:]), dtype=pixels.dtype, device=self.device)
            try:
                replay = None if capture is None else capture(self._encode_tick, _nothing, options.warmup)
            except Exception as exc:  # noqa: BLE001 - the step's graphs still serve; the eager encoder feeds them
                self.encoder_failure = f"{type(exc).__name__}: {str(exc)[:300]}"
            else:
                self.encode = Tick(self._encode_tick, replay, stats)

    def _encode_tick(self) -> None:
        cross_k, cross_v = self.encoder(self.pixels)
        beams = self.settings.num_beams
        self.cross_k.unflatten(1, (self.items, beams)).copy_(cross_k[:, :, None])
        self.cross_v.unflatten(1, (self.items, beams)).copy_(cross_v[:, :, None])

    def _reset_state(self) -> None:
        self.position.zero_()
        self.self_k.zero_()
        self.self_v.zero_()

    def load(self, cross_k: torch.Tensor, cross_v: torch.Tensor) -> None:
        """Start a batch: this batch's cross-attention state in the first rows (one copy per beam), padding rows
        zeroed and marked done, empty caches, the start token at position 0."""
        n, beams = cross_k.shape[1], self.settings.num_beams
        for static, new in ((self.cross_k, cross_k), (self.cross_v, cross_v)):
            static[:, : n * beams].unflatten(1, (n, beams)).copy_(new[:, :, None])
            static[:, n * beams :].zero_()
        self._start(n)

    def load_pixels(self, pixels: torch.Tensor) -> None:
        """Start a batch from its pixels: they go into the bucket's pixel buffer (padding images zeroed, their rows
        marked done) and the encoder's tick, captured with the bucket, fills the cross buffers."""
        n = pixels.shape[0]
        self.pixels[:n].copy_(pixels)
        self.pixels[n:].zero_()
        self.encode()
        self._start(n)

    def _start(self, n: int) -> None:
        beams = self.settings.num_beams
        self._reset_state()
        self.tokens.fill_(self.settings.start_token_id)
        self.parent.copy_(torch.arange(self.parent.shape[0], device=self.device))
        self.done[: n * beams] = False
        self.done[n * beams :] = True
        self.out.fill_(self.settings.eos_token_id)
        if self.beams is not None:
            self.beams.start(n)

    def _step(self, self_k: torch.Tensor, self_v: torch.Tensor) -> torch.Tensor:
        logits, new_k, new_v = self.step(self.tokens, self.position, self_k, self_v, self.cross_k, self.cross_v)
        if new_k is not self.self_k:  # a step with the in-place cache (greedy) has written into the buffers already
            self.self_k.copy_(new_k)
            self.self_v.copy_(new_v)
        return logits

    def _greedy_tick(self) -> None:
        s = self.settings
        nxt = self._step(self.self_k, self.self_v).argmax(dim=-1)
        # forced tokens as runtime.decode.state.forced_token picks them: BOS wins when both fall on one step
        if s.forced_eos_token_id is not None:
            nxt = torch.where(self.position == s.max_new_tokens - 1, s.forced_eos_token_id, nxt)
        if s.forced_bos_token_id is not None:
            nxt = torch.where(self.position == 0, s.forced_bos_token_id, nxt)
        nxt = torch.where(self.done, s.eos_token_id, nxt)
        self.out.index_copy_(1, self.position, nxt[:, None])
        self.done |= nxt == s.eos_token_id
        self.tokens.copy_(nxt)
        self.position += 1

    def _beam_tick(self) -> None:
        logits = self._step(self.self_k.index_select(1, self.parent), self.self_v.index_select(1, self.parent))
        self.beams.advance(logits, self.position, self.tokens, self.parent)

    def greedy(self, n: int, eos_every: int) -> list[list[int]]:
        """Greedy decoding of the loaded batch's first `n` rows (EOS included when emitted)."""
        steps = self.settings.max_new_tokens
        for t in range(1, steps + 1):
            self.tick()
            if t % eos_every == 0 and t < steps and bool(self.done.all()):
                break
        eos = self.settings.eos_token_id
        return [row[: row.index(eos) + 1] if eos in row else row for row in self.out[:n].tolist()]


class StaticDecoder:
    """Greedy and beam search over an exported step on fixed buckets.

    The eager loops (runtime.decode.greedy, runtime.decode.beam) compact finished rows and read every token back to
    the host, so each step waits on the host. Here a batch is padded to the next bucket (1, 2, 4, ... up to the
    manifest's largest batch), the step reads and writes tensors that live as long as the bucket (caches,
    cross-attention keys/values, tokens, position), finished rows are masked on the device instead of dropped, and the
    host asks whether every row is done once every `eos_every` steps. Without a capture (the CPU, `capture=False`) the
    same code calls the step directly: the tests' way to check buckets and buffers without a GPU.

    With a capture (CUDA graphs), captures happen on one thread, the one that serves: `prepare` makes every bucket
    of the served settings there, before the model serves, and from then on only that thread makes a bucket.
    Captures and decodes hold one lock (`DEVICE_LOCK`) and a capture's error mode is thread-local, so a thread
    loading the next model meanwhile neither breaks a capture nor is broken by one. A capture that fails raises
    CaptureFailed and is kept in `failure`: the eager loop serves that model, and whoever called `prepare` reports
    it (runtime.agent.model.capture).
    """

    def __init__(
        self,
        step: Step,
        max_items: int,
        options: StaticOptions = StaticOptions(),
        capture: Capture | None = None,
        lock=DEVICE_LOCK,
        encoder: Encoder | None = None,
    ):
        if options.eos_every < 1:
            raise ValueError(f"eos_every must be at least 1, not {options.eos_every}")
        self.step, self.sizes, self.options, self.lock = step, buckets(max_items), options, lock
        self.encoder = encoder  # given: each bucket also runs (captures) the encoder on its own pixel buffer
        self._sample: tuple[torch.Tensor, torch.Tensor] | None = None  # (cross, pixels) of one image, from prepare
        self.capture = (capture or CudaGraphs()) if options.capture else None
        self._buckets: dict[tuple, Bucket] = {}
        self.owner: int | None = None  # the thread that called prepare: the only one that captures
        self.failure: CaptureFailed | None = None
        self.stats = GraphStats()

    @property
    def ready(self) -> bool:
        """Whether decode may be called: prepared (or nothing to capture), and no capture failed."""
        return self.failure is None and (self.capture is None or self.owner is not None)

    def bucket_size(self, items: int) -> int:
        """The smallest bucket that holds `items` images."""
        for size in self.sizes:
            if size >= items:
                return size
        raise ValueError(f"{items} images: the largest bucket is {self.sizes[-1]} (the manifest's max_batch)")

    def prepare(self, settings: DecodeSettings, cross: torch.Tensor, pixels: torch.Tensor | None = None) -> None:
        """Make (and capture) the bucket of every size for `settings` now, on this thread, which from now on is the
        only one that captures; `cross` is any cross-attention tensor of the model (its shape but the batch), and
        `pixels` the batch it came from (with an encoder: the buckets' pixel buffers take its shape).
        CaptureFailed, also kept in `failure`, when a bucket cannot be made; a decoder that failed stays failed."""
        if self.failure is not None:
            raise self.failure
        with self.lock:
            self.owner = threading.get_ident()
            if self.encoder is not None and pixels is not None:
                self._sample = (cross[:, :1].clone(), pixels[:1].clone())
            for size in self.sizes:
                self.bucket(size, settings, cross, None if self._sample is None else self._sample[1])

    def bucket(
        self, items: int, settings: DecodeSettings, cross: torch.Tensor, pixels: torch.Tensor | None = None
    ) -> Bucket:
        """The bucket for `items` images under `settings`, made on first use (by the serving thread if captured);
        with `pixels` (and an encoder) it holds a pixel buffer of their shape and the encoder's tick."""
        size = self.bucket_size(items)
        key = (
            size,
            settings,
            tuple(cross.shape[:1] + cross.shape[2:]),
            cross.dtype,
            cross.device,
            None if pixels is None else tuple(pixels.shape[1:]),
        )
        if key in self._buckets:
            return self._buckets[key]
        label = f"{size}x{settings.num_beams}"
        if self.capture is not None and threading.get_ident() != self.owner:
            raise CaptureFailed(
                f"bucket {label} (images x beams) was asked for on thread "
                f"{threading.current_thread().name!r}: only the serving thread, the one that called "
                "prepare(), captures CUDA graphs"
            )
        started = time.perf_counter()
        with self.lock:
            try:
                made = Bucket(
                    self.step,
                    size,
                    settings,
                    cross,
                    self.options,
                    self.capture,
                    self.stats,
                    self.encoder if pixels is not None else None,
                    pixels,
                )
                self._buckets[key] = made
            except Exception as exc:  # noqa: BLE001 - whatever the capture raises, the model must not serve half-made
                self._buckets.clear()
                self.failure = CaptureFailed(f"bucket {label} (images x beams): {type(exc).__name__}: {str(exc)[:300]}")
                raise self.failure from exc
        self.stats.capture_s[label] = round(time.perf_counter() - started, 3)
        if made.encoder_failure is not None:
            self.stats.encoder_failed[label] = made.encoder_failure
        return made

    @torch.inference_mode()
    def decode(self, cross_k: torch.Tensor, cross_v: torch.Tensor, settings: DecodeSettings) -> list[list[int]]:
        """Token ids per image, as runtime.decode.greedy.greedy or runtime.decode.beam.beam_search give them."""
        if self.failure is not None:
            raise self.failure
        n = cross_k.shape[1]
        with self.lock:
            bucket = self.bucket(n, settings, cross_k)
            bucket.load(cross_k, cross_v)
            return self._run(bucket, n)

    @torch.inference_mode()
    def decode_pixels(self, pixels: torch.Tensor, settings: DecodeSettings) -> list[list[int]]:
        """Token ids per image from their pixels: the bucket's encoder tick (captured with it) writes the cross
        buffers, then its step ticks decode. Before `prepare` gave a sample, or for a bucket whose encoder could not
        be captured, the encoder runs eagerly and `decode` takes its outputs."""
        if self.failure is not None:
            raise self.failure
        n = pixels.shape[0]
        with self.lock:
            if self._sample is None:
                return self.decode(*self.encoder(pixels), settings)
            bucket = self.bucket(n, settings, self._sample[0], self._sample[1])
            if bucket.encode is None:
                bucket.load(*self.encoder(pixels))
            else:
                bucket.load_pixels(pixels)
            return self._run(bucket, n)

    def _run(self, bucket: Bucket, n: int) -> list[list[int]]:
        if bucket.settings.num_beams == 1:
            return bucket.greedy(n, self.options.eos_every)
        return beam_search_static(bucket, n, self.options.eos_every)


def static_decoder(
    step: Step, device: torch.device, max_items: int, encoder: Encoder | None = None
) -> StaticDecoder | None:
    """The CUDA decode path for an exported step (and its encoder, captured per bucket); None on the CPU, where the
    eager loop stays (it drops finished rows, and nothing there waits on kernel launches)."""
    if torch.device(device).type != "cuda":
        return None
    return StaticDecoder(step, max_items, encoder=encoder)
