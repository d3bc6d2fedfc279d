"""The Qwen-VL family: Qwen2-VL, Qwen2.5-VL (window attention) and Qwen3-VL (DeepStack), decoder-only captioners.

The image size and the prompt (in the checkpoint's own chat template) are fixed at export. The encoder program is
vision tower + merger + the prompt's prefill up to its last token, returning that KV prefix where the other
families return cross-attention keys and values; the prompt's last token is the decoder's start token, so the
step program's first call gives HF's first logits and the runtime's loops stay the same for every family.
"""

from __future__ import annotations

import hashlib
import json

import PIL.Image
import torch

from export.families.base import Family, UnsupportedModel
from export.families.qwen_vl_programs import QwenPrefill, QwenStep, patchify, unpatchify

KINDS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
DEFAULT_PROMPT = "Describe this image in one sentence."
# 448 x 448 is 256 image tokens at patch 14 (Qwen2/2.5-VL), 196 at patch 16 (Qwen3-VL): the prefill stays well under
# a second per image on a GPU while a caption still sees the whole picture (the processor's default allows 16384)
DEFAULT_IMAGE_SIDE = 448


def chat_template(loaded) -> str:
    """The checkpoint's chat template: the tokenizer's, else the processor's chat_template.jinja or .json."""
    if getattr(loaded.tokenizer, "chat_template", None):
        return loaded.tokenizer.chat_template
    from transformers.utils import cached_file

    revision = loaded.source["revision"]
    for name in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(
            loaded.source["model"],
            name,
            revision=None if revision == "local" else revision,
            _raise_exceptions_for_missing_entries=False,
        )
        if path:
            text = open(path, encoding="utf-8").read()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    raise UnsupportedModel(f"{loaded.source['model']} ships no chat template; the Qwen-VL prompt is built with it")


def prompt_ids(tokenizer, template: str, prompt: str, grid: tuple[int, int, int], config) -> torch.Tensor:
    """The prompt's ids as Qwen2VLProcessor makes them: the chat template, `<|image_pad|>` expanded to the image's
    merged patch count."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)
    pad = tokenizer.convert_ids_to_tokens(config.image_token_id)
    if text.count(pad) != 1:
        raise UnsupportedModel(f"the chat template gave {text.count(pad)} image placeholders {pad!r}; expected one")
    tokens = grid[0] * grid[1] * grid[2] // config.vision_config.spatial_merge_size**2
    return torch.tensor(tokenizer(text.replace(pad, pad * tokens), add_special_tokens=False)["input_ids"])


def hf_generate_inputs(config, ids: torch.Tensor, pixel_values: torch.Tensor, grid, batch: int) -> dict:
    """`generate` keyword arguments for `batch` images (flat patches `pixel_values`) behind the same prompt."""
    input_ids = ids[None].expand(batch, -1).clone()
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": pixel_values,
        "image_grid_thw": torch.tensor([list(grid)] * batch),
        "mm_token_type_ids": (input_ids == config.image_token_id).int(),
    }


def parse_image_size(value) -> tuple[int, int]:
    """'448', '448x336' or (h, w) -> (height, width)."""
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    parts = str(value).lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise UnsupportedModel(f"--image-size {value!r}: expected HEIGHTxWIDTH or one side, e.g. 448 or 448x336")
    return int(parts[0]), int(parts[-1])


def _grid(loaded, size: tuple[int, int]) -> tuple[int, int, int]:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    proc, vision = loaded.processor, loaded.model.config.vision_config
    factor = vision.patch_size * vision.spatial_merge_size
    if proc.patch_size != vision.patch_size or proc.merge_size != vision.spatial_merge_size:
        raise UnsupportedModel(
            f"the image processor's patch {proc.patch_size}/merge {proc.merge_size} differ from "
            f"the vision tower's {vision.patch_size}/{vision.spatial_merge_size}"
        )
    fits = smart_resize(
        *size, factor=factor, min_pixels=proc.size["shortest_edge"], max_pixels=proc.size["longest_edge"]
    )
    if tuple(fits) != tuple(size):
        raise UnsupportedModel(
            f"--image-size {size[0]}x{size[1]}: the processor would resize it to "
            f"{fits[0]}x{fits[1]}; use sides that are multiples of {factor} within its pixel range"
        )
    return 1, size[0] // vision.patch_size, size[1] // vision.patch_size


def _prepare(loaded, task: str | None) -> None:
    """Fix the prompt and the image size: prompt ids, the image's place in them, its M-RoPE positions."""
    if task is not None:
        raise UnsupportedModel(f"--task {task!r}: Qwen-VL takes --prompt (a free-text instruction), not a task")
    options = loaded.extras.get("options", {})
    prompt = options.get("prompt") or DEFAULT_PROMPT
    size = parse_image_size(options.get("image_size") or DEFAULT_IMAGE_SIDE)
    grid = _grid(loaded, size)
    config = loaded.model.config
    ids = prompt_ids(loaded.tokenizer, chat_template(loaded), prompt, grid, config)
    is_image = (ids == config.image_token_id).nonzero().flatten()
    start, count = int(is_image[0]), int(is_image.numel())
    inputs = hf_generate_inputs(config, ids, torch.zeros(1), grid, 1)
    positions, _ = loaded.model.model.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"]
    )
    positions = positions[:, 0]
    if not bool((positions[:, -1] == positions.max()).all()):
        raise UnsupportedModel("the prompt must end in text (the chat template's assistant turn)")
    loaded.extras.update(
        prompt=prompt,
        image_size=size,
        grid=grid,
        prompt_ids=ids,
        image_start=start,
        image_tokens=count,
        positions=positions,
        start_token_id=int(ids[-1]),
        manifest={
            "prompt": prompt,
            "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
            "prompt_tokens": int(ids.numel()),
        },
    )


def _wrap(loaded, max_length: int):
    x = loaded.extras
    encoder = QwenPrefill(loaded.model, x["prompt_ids"], x["image_start"], x["image_tokens"], x["positions"], x["grid"])
    # slot 0 of the step holds the prompt's last token, at the prompt's largest position
    step = QwenStep(loaded.model, max_length, int(x["positions"].max()))
    text = loaded.model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return encoder, step, {"layers": text.num_hidden_layers, "heads": text.num_key_value_heads, "head_dim": head_dim}


def _token_ids(model):
    """(start, EOS, pad): start is fixed by the prompt; of the checkpoints' two EOS ids, <|im_end|> (listed first)
    ends the assistant's turn; the runtime stops at one id."""
    gc = model.generation_config
    eos = gc.eos_token_id
    return None, eos[0] if isinstance(eos, (list, tuple)) else eos, gc.pad_token_id


def preprocessing(loaded) -> dict:
    """The runtime's spec: resize straight to the fixed size, then the processor's rescale and normalisation."""
    proc = loaded.processor
    height, width = loaded.extras["image_size"]
    return {
        "processor_class": type(proc).__name__,
        "backend": "pil",
        "do_convert_rgb": bool(proc.do_convert_rgb),
        "do_resize": True,
        "size": {"height": height, "width": width},
        "resample": int(proc.resample),
        "do_center_crop": False,
        "crop_size": None,
        "do_rescale": bool(proc.do_rescale),
        "rescale_factor": float(proc.rescale_factor) if proc.do_rescale else None,
        "do_normalize": bool(proc.do_normalize),
        "image_mean": [float(v) for v in proc.image_mean] if proc.do_normalize else None,
        "image_std": [float(v) for v in proc.image_std] if proc.do_normalize else None,
        "channel_order": "RGB",
        "data_format": "channels_first",
        "dtype": "float32",
    }


def hf_pixels(loaded, images: list[PIL.Image.Image]) -> torch.Tensor:
    """HF's pixels for images of the artifact's size (others resized to it first, as qwen_vl_utils' resized_height
    and resized_width do), unpatchified to [N, 3, H, W]."""
    from transformers.image_transforms import convert_to_rgb

    height, width = loaded.extras["image_size"]
    proc = loaded.processor
    sized = [convert_to_rgb(im).resize((width, height), resample=proc.resample) for im in images]
    flat = proc(images=sized, return_tensors="pt")["pixel_values"]
    return unpatchify(flat, (height, width), proc.patch_size, proc.merge_size, proc.temporal_patch_size)


def _hf_inputs(loaded, pixels: torch.Tensor) -> dict:
    proc = loaded.processor
    flat = patchify(pixels, proc.patch_size, proc.merge_size, proc.temporal_patch_size)
    return hf_generate_inputs(
        loaded.model.config,
        loaded.extras["prompt_ids"],
        flat.reshape(-1, flat.shape[-1]),
        loaded.extras["grid"],
        pixels.shape[0],
    )


FAMILY = Family(
    name="qwen-vl",
    description="Qwen2VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration "
    "(Qwen/Qwen2-VL-*, Qwen/Qwen2.5-VL-*, Qwen/Qwen3-VL-*; dense, not MoE), --prompt and --image-size",
    matches=lambda config: getattr(config, "model_type", None) in KINDS,
    model_class="AutoModelForImageTextToText",
    prepare=_prepare,
    wrap=_wrap,
    token_ids=_token_ids,
    options=("prompt", "image_size"),
    preprocessing=preprocessing,
    hf_pixels=hf_pixels,
    hf_inputs=_hf_inputs,
    generate_eos=True,
    hf_prompt_length=lambda loaded: int(loaded.extras["prompt_ids"].numel()),
)
