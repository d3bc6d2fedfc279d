"""What a model family tells the exporter: how to recognise, load, wrap and check one architecture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from export.errors import UnsupportedModel


def generation_ids(model) -> tuple[Any, Any, Any]:
    """(decoder start, end-of-sequence, pad) ids as an encoder-decoder checkpoint's generation config sets them."""
    gc = model.generation_config
    start = gc.decoder_start_token_id if gc.decoder_start_token_id is not None else model.config.decoder_start_token_id
    return start, gc.eos_token_id, gc.pad_token_id


def _no_task(loaded, task: str | None) -> None:
    if task is not None:
        raise UnsupportedModel(
            f"--task {task!r}: {loaded.source['architecture']} takes no task prompt "
            "(only prompt-driven families such as Florence-2 do)"
        )


def _described(processor) -> dict:
    from export.preprocessing import spec_from_processor

    return spec_from_processor(processor)


def vision_encoder_decoder(decoder_type: str) -> Callable[[Any], bool]:
    """`Family.matches` for a VisionEncoderDecoderModel with a ViT or DeiT encoder and this decoder model type."""
    return lambda config: (
        getattr(config, "model_type", None) == "vision-encoder-decoder"
        and config.encoder.model_type in ("vit", "deit")
        and config.decoder.model_type == decoder_type
    )


@dataclass(frozen=True)
class Family:
    """One architecture: the exporter and the parity gate ask this, and never branch on a family's name.

    - `matches(config)`: whether a checkpoint's config is this family.
    - `model_class`, `attention`: the transformers class to load, and its attention implementation.
    - `refuse(config)`: why a checkpoint this family matches still cannot be exported (None: it can).
    - `prepare(loaded, task)`: after loading, fixes export-time choices (a task prompt) into `loaded.extras`;
      the default refuses a task, which only prompt-driven families take.
    - `wrap(loaded, max_length)`: (encoder program module, decoder-step module, cache dims {layers, heads, head_dim}).
    - `token_ids(model)`: (decoder start, EOS, pad) ids.
    - `after_load(model)`: mends a loaded model (None: nothing to mend).
    - `text`: how the runtime turns ids into the caption (manifest "tokenizer" block, see runtime.decode.text).
    - `hf_inputs(loaded, pixels)`: the keyword arguments HF `generate` takes for these pixels.
    - `hf_text(loaded, ids)`: the caption a user of HF gets for generated `ids` (the parity gate's reference).
    - `options`: the export options besides --task it takes (e.g. "prompt", "image_size"); the others are refused.
    - `preprocessing(loaded)`: the manifest's preprocessing spec (default: described from the HF image processor).
    - `hf_pixels(loaded, images)`: HF's pixel values as the encoder program takes them ([N, 3, H, W]).
    - `hf_prompt_length(loaded)`: how many leading ids of HF `generate`'s output are not generated.
    """

    name: str
    description: str
    matches: Callable[[Any], bool]
    model_class: str
    wrap: Callable[[Any, int], tuple[torch.nn.Module, torch.nn.Module, dict]]
    attention: str = "sdpa"
    token_ids: Callable[[Any], tuple[Any, Any, Any]] = generation_ids
    after_load: Callable[[Any], None] | None = None
    refuse: Callable[[Any], str | None] = lambda _config: None
    prepare: Callable[[Any, str | None], None] = lambda loaded, task: _no_task(loaded, task)
    text: dict = field(default_factory=lambda: {"skip_special_tokens": True})
    hf_inputs: Callable[[Any, torch.Tensor], dict] = lambda _loaded, pixels: {"pixel_values": pixels}
    generate_eos: bool = False  # pass the manifest's one EOS id to HF `generate` (checkpoints that list several)
    hf_text: Callable[[Any, list[int]], str] = lambda loaded, ids: loaded.tokenizer.batch_decode(
        [ids], skip_special_tokens=True
    )[0]
    options: tuple[str, ...] = ()
    preprocessing: Callable[[Any], dict] = lambda loaded: _described(loaded.processor)
    hf_pixels: Callable[[Any, list], torch.Tensor] = lambda loaded, images: loaded.processor(
        images=images, return_tensors="pt"
    )["pixel_values"]
    hf_prompt_length: Callable[[Any], int] = lambda _loaded: 1
