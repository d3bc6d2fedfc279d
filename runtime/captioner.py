"""The inference core: a loaded artifact that turns images into captions with torch alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import PIL.Image
import torch

from runtime.artifact import contract
from runtime.artifact.verify import check_artifact
from runtime.backends.exported import rebuilt_programs
from runtime.cache import DEFAULT_DIR
from runtime.decode.beam import beam_search
from runtime.decode.cuda_graphs import DEVICE_LOCK, static_decoder
from runtime.decode.greedy import greedy
from runtime.decode.state import DecodeSettings, Trace
from runtime.decode.text import TextDecoder
from runtime.errors import ArtifactError, BadDescription, CaptionKitError
from runtime.images.preprocess import Preprocessor
from runtime.load_policy import (
    check_options,
    check_quantize,
    device_falling_back_to_cpu,
    refuse_aoti_on_cuda,
    step_passes,
)
from runtime.options import LoadOptions


class Captioner:
    """A verified, loaded artifact: preprocess on any thread, caption on the device."""

    def __init__(
        self,
        path: Path,
        manifest: dict,
        tokenizer_json: str,
        programs: dict,
        device: torch.device,
        sha256: str,
        backend: str = "exported",
        quantize: str | None = None,
        load_phases: dict[str, float] | None = None,
    ):
        self.path, self.manifest, self.device, self.sha256, self.backend = path, manifest, device, sha256, backend
        self.quantize, self.load_phases = quantize, load_phases or {}
        self.name = manifest["source"]["model"]
        self.prompt_sha256 = manifest.get("prompt_sha256")  # a prompt fixed at export (Qwen-VL), None for the others
        self.max_batch = int(manifest["max_batch"])
        self.max_beams = int(manifest["max_beams"])
        self.dtype = getattr(torch, manifest["dtype"])
        self.encoder, self.step = programs["encoder"], programs["decoder_step"]
        gen = manifest["generation"]
        self.settings = DecodeSettings(
            start_token_id=gen["start_token_id"],
            eos_token_id=gen["eos_token_id"],
            max_new_tokens=gen["max_new_tokens"],
            num_beams=gen["num_beams"],
            length_penalty=gen["length_penalty"],
            early_stopping=gen["early_stopping"],
            forced_bos_token_id=gen.get("forced_bos_token_id"),
            forced_eos_token_id=gen.get("forced_eos_token_id"),
        )
        self.text = TextDecoder(tokenizer_json, manifest["tokenizer"])
        self._preprocess = Preprocessor(manifest["preprocessing"])  # refuses a bad spec at load, not at first image
        # None: the eager loops (cuda_graphs.py); on CUDA each bucket also captures the encoder
        self.static = static_decoder(self.step, device, self.max_batch, encoder=self._checked_encoder)

    def prepare(self, num_beams: int | None = None) -> dict:
        """Make every decode bucket for `num_beams` (default: the artifact's) now, on this thread: on CUDA their
        graphs are captured here, and only this thread captures from now on (call it on the thread that serves,
        before it serves). Returns `decode_status()`; CaptureFailed (runtime.errors) when a bucket cannot be made,
        and the eager loop serves this model: the caller reports it."""
        if self.static is not None:
            settings = self.decode_settings(num_beams)
            grey = self.preprocess([PIL.Image.new("RGB", (64, 64), (127, 127, 127))]).to(self.device, self.dtype)
            with torch.inference_mode(), self.static.lock:
                cross_k, _ = self._checked_encoder(grey)
                self.static.prepare(settings, cross_k, grey)
        return self.decode_status()

    def _checked_encoder(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's (cross_k, cross_v) for `pixels`, their shapes checked against the manifest (metadata only,
        so it can run inside a capture); ArtifactError when the programs do not keep the manifest's contract."""
        try:  # upload checked this on the meta device; a load checks the counts (runtime.artifact.contract)
            return contract.check_encoder(self.encoder(pixels), self.manifest, pixels.shape[0])
        except BadDescription as exc:
            raise ArtifactError(f"{self.path}: {exc}; export the model again") from None

    def decode_settings(self, num_beams: int | None = None) -> DecodeSettings:
        """The artifact's decode settings with `num_beams` (default: its own), checked against its largest."""
        beams = self.settings.num_beams if num_beams is None else num_beams
        if not 1 <= beams <= self.max_beams:
            raise ValueError(
                f"num_beams={beams}: this artifact's decoder accepts 1 to {self.max_beams} beams "
                "(re-export with --num-beams to raise it)"
            )
        return DecodeSettings(**{**self.settings.__dict__, "num_beams": beams})

    def decode_status(self) -> dict:
        """How captions are decoded: `decode` is "cuda-graphs", "static" (buckets, no capture), "eager", "eager, not
        prepared" or "eager, capture failed" (with the cause); the buckets made and the seconds each took."""
        static = self.static
        if static is None:
            return {"decode": "eager"}
        if static.failure is not None:
            return {"decode": "eager, capture failed", "reason": str(static.failure)}
        if not static.ready:
            return {"decode": "eager, not prepared"}
        status = {
            "decode": "cuda-graphs" if static.capture is not None else "static",
            "capture_s": dict(static.stats.capture_s),
        }
        if static.encoder is not None and static.stats.encoder_failed:
            label, reason = next(iter(static.stats.encoder_failed.items()))
            status.update(encoder="eager, capture failed", encoder_reason=f"bucket {label}: {reason}")
        elif static.encoder is not None:
            status["encoder"] = "in the buckets"
        return status

    def preprocess(self, images: list[PIL.Image.Image]) -> torch.Tensor:
        """RGB images to a CPU float32 pixel batch, as the model's HF image processor makes it."""
        return self._preprocess(images)

    @torch.inference_mode()
    def generate_ids(
        self, pixel_values: torch.Tensor, num_beams: int | None = None, trace: Trace | None = None
    ) -> list[list[int]]:
        """Token ids per image (EOS included when emitted), in chunks of at most `max_batch`."""
        settings = self.decode_settings(num_beams)
        out: list[list[int]] = []
        search = greedy if settings.num_beams == 1 else beam_search
        for start in range(0, pixel_values.shape[0], self.max_batch):
            chunk = pixel_values[start : start + self.max_batch].to(self.device, self.dtype)
            with self.static.lock if self.static is not None else DEVICE_LOCK:
                static = self.static if trace is None and self.static is not None and self.static.ready else None
                if static is not None and static.encoder is not None:
                    out.extend(static.decode_pixels(chunk, settings))
                    continue
                cross_k, cross_v = self._checked_encoder(chunk)
                # the static decoder when it is ready; else the eager loop: none (the CPU), not prepared yet (a model
                # warmed up by the thread that loads it), or a capture that failed (reported by whoever prepared)
                out.extend(
                    static.decode(cross_k, cross_v, settings)
                    if static is not None
                    else search(self.step, cross_k, cross_v, settings, trace=trace)
                )
        return out

    def caption_pixels(self, pixel_values: torch.Tensor, num_beams: int | None = None) -> list[str]:
        """Captions for a preprocessed batch."""
        return [self.text.decode(ids) for ids in self.generate_ids(pixel_values, num_beams)]

    def caption(self, images: list[PIL.Image.Image], num_beams: int | None = None) -> list[str]:
        """Captions for RGB images."""
        return self.caption_pixels(self.preprocess(images), num_beams)


def load_captioner(
    path: str | os.PathLike,
    device: str = "auto",
    options: LoadOptions = LoadOptions(),
    *,
    cache_dir: str | os.PathLike | None = None,
    expected_sha256: str | None = None,
    sha256_checked: bool = False,
    report=None,
) -> Captioner:
    """Verify and load a .pt2 artifact; `expected_sha256` (from the model pointer) checks the whole file too.

    A file matching the pointer's SHA-256 was verified record by record before it was uploaded, so its
    program checksums are not hashed again; `sha256_checked=True` says the caller has just hashed it
    (the agent's download), so nothing is hashed twice. `cache_dir` (runtime.cache) keeps what a restart need not
    redo: stamps of verified files, int8 weights, compiled packages (aoti without one: runtime.cache.DEFAULT_DIR).
    If aoti programs cannot be had, `report` says why in one line and the exported programs are used. The
    captioner's `load_phases` holds the seconds of each step (integrity_s, weights_s, programs_s, graph_passes_s).
    """
    clock = _Clock()
    check_options(options)  # runtime.load_policy decides the device, backend and quantization; it refuses here
    quantize = options.quantize
    path = Path(path)
    resolved = device_falling_back_to_cpu(device)
    refuse_aoti_on_cuda(options.backend, resolved)
    # On CUDA a file the model pointer does not vouch for (the caption CLI, a laptop) also gets upload's meta run
    # (about a second): a token id past the vocabulary or an output outside the contract would otherwise reach the
    # device as an out-of-range index, an assert that ends the process instead of refusing the file
    sizes = resolved.type == "cuda" and expected_sha256 is None
    checked = check_artifact(path, expected_sha256, sha256_checked, cache_dir=cache_dir, device=resolved, sizes=sizes)
    manifest, tokenizer_json, sha = checked.manifest, checked.tokenizer_json, checked.sha256
    clock.lap("integrity_s")
    if quantize is not None:  # refused before a gigabyte of programs is loaded, not after
        check_quantize(quantize, resolved, manifest["dtype"])
    if options.backend == "aoti":
        from runtime.backends import aoti

        report = report or aoti.default_report
        try:
            programs = aoti.compiled_programs(
                path, sha, resolved, cache_dir or DEFAULT_DIR, remote=options.remote, report=report
            )
            return _captioner(
                path, manifest, tokenizer_json, programs, resolved, sha, backend="aoti", load_phases=clock.phases
            )
        except aoti.AotiUnavailable as exc:
            report(
                "warning", event="aoti_fallback", reason=f"AOTInductor unavailable, using the exported programs: {exc}"
            )
    programs, clock.phases["weights_s"] = rebuilt_programs(checked, resolved)
    clock.lap("programs_s")
    if quantize is not None:
        from runtime.passes.quantize import int8_weights_file, quantize_programs

        quantize_programs(programs, quantize, resolved, manifest["dtype"], int8_weights_file(cache_dir, sha))
    passes = step_passes(options, resolved)
    if "decode_layout" in passes:
        from runtime.passes.decode_layout import apply_decode_layout

        apply_decode_layout(programs["decoder_step"], pack=None if options.pack_linears else False)
    if "cache_in_place" in passes:
        from runtime.passes.cache_in_place import apply_cache_in_place

        apply_cache_in_place(programs["decoder_step"])
    if "one_mask" in passes:
        from runtime.passes.one_mask import apply_one_mask

        apply_one_mask(programs["decoder_step"], getattr(torch, manifest["dtype"]))
    if "one_gelu" in passes:
        from runtime.passes.one_gelu import apply_one_gelu

        apply_one_gelu(programs["decoder_step"], getattr(torch, manifest["dtype"]))
    clock.lap("graph_passes_s")
    return _captioner(
        path, manifest, tokenizer_json, programs, resolved, sha, quantize=quantize, load_phases=clock.phases
    )


def _captioner(path: Path, *args, **kwargs) -> Captioner:
    """A Captioner, or one ArtifactError line when the manifest's settings or tokenizer cannot make one."""
    try:
        return Captioner(path, *args, **kwargs)
    except CaptionKitError:
        raise
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises its own types for a bad tokenizer.json
        raise ArtifactError(
            f"{path}: its settings or tokenizer are not usable ({type(exc).__name__}: "
            f"{str(exc)[:200]}); export the model again"
        ) from None


class _Clock:
    """Seconds per load step, kept as the captioner's `load_phases` (the cold-start benchmark reads them)."""

    def __init__(self):
        self.phases: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self.last, 3)
        self.last = now
