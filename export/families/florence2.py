"""The Florence-2 family (transformers' native Florence2ForConditionalGeneration, florence-community/Florence-2-*).

The task prompt is fixed at export: the encoder program runs the DaViT vision tower and projector, joins the
image features with the embedded prompt, runs the BART encoder, and computes every decoder layer's
cross-attention keys and values once; the step program is one BART decoder token over an explicit cache.
"""

from __future__ import annotations

import PIL.Image
import torch
import torch.nn.functional as F
from torch import nn

from export.families.base import Family, UnsupportedModel
from export.families.post_norm import run_layers, step_layers
from export.wrap_common import position_mask, split_heads, swap_submodules

# The tasks whose answer is text (post_process_generation's "pure_text"); the others return boxes or polygons
TEXT_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OCR>")
DEFAULT_TASK = "<MORE_DETAILED_CAPTION>"


class Florence2Encoder(nn.Module):
    """Pixels in; every decoder layer's cross-attention keys and values out ([L, B, H, S, D] each).

    `prompt_ids` is the processor's expansion of the task for one image: `<image>` * image tokens, then the
    prompt's text. The processor always puts the image tokens first, so HF's masked scatter is a concatenation
    here (which also avoids its data-dependent placeholder-count check).
    """

    def __init__(self, model, prompt_ids: torch.Tensor):
        super().__init__()
        inner = model.model
        self.vision, self.projector = inner.vision_tower, inner.multi_modal_projector
        encoder = inner.language_model.encoder
        # the prompt is fixed: embed it once, so this program does not store the vocabulary matrix the step holds
        self.text_encoder = swap_submodules(encoder, embed_tokens=None)
        ids = torch.as_tensor(prompt_ids, dtype=torch.long).flatten()
        is_image = ids == model.config.image_token_id
        images = int(is_image.sum())
        if not bool(is_image[:images].all()):
            raise UnsupportedModel(
                "Florence-2 prompt: expected the image placeholders first (Florence2Processor's layout)"
            )
        with torch.no_grad():
            # a constant derived from the prompt, not a weight (non-persistent: the program keeps it as a constant)
            self.register_buffer("text_embeds", encoder.embed_tokens(ids[images:]).detach().clone(), persistent=False)
        layers = inner.language_model.decoder.layers
        self.cross_k = nn.ModuleList(layer.encoder_attn.k_proj for layer in layers)
        self.cross_v = nn.ModuleList(layer.encoder_attn.v_proj for layer in layers)
        self.num_heads = model.config.text_config.decoder_attention_heads

    def forward(self, pixel_values: torch.Tensor):
        image = self.projector(self.vision(pixel_values).last_hidden_state)
        text = self.text_embeds[None].expand(image.shape[0], -1, -1)
        states = self.text_encoder(inputs_embeds=torch.cat([image.to(text.dtype), text], dim=1)).last_hidden_state
        keys = [split_heads(k(states), self.num_heads) for k in self.cross_k]
        values = [split_heads(v(states), self.num_heads) for v in self.cross_v]
        return torch.stack(keys), torch.stack(values)


class Florence2Step(nn.Module):
    """One BART decoder token (post-norm layers, learned positions from row 2) over an explicit cache."""

    def __init__(self, model, max_length: int):
        super().__init__()
        decoder = model.model.language_model.decoder
        self.embed_tokens = decoder.embed_tokens  # scales by sqrt(d_model) itself when scale_embedding is set
        self.positions = decoder.embed_positions.weight
        self.position_offset = decoder.embed_positions.offset
        self.layernorm_embedding = decoder.layernorm_embedding
        self.layers = step_layers(decoder.layers)
        self.act = decoder.layers[0].activation_fn
        self.scaling = decoder.layers[0].self_attn.scaling  # head_dim ** -0.5, the same in every attention
        self.lm_head = None if model.lm_head.weight is self.embed_tokens.weight else model.lm_head  # tied: once
        bias = getattr(model, "final_logits_bias", None)
        self.register_buffer("logits_bias", None if bias is None else bias.detach().reshape(-1).clone())
        self.num_heads = model.config.text_config.decoder_attention_heads
        self.max_length = max_length

    def forward(self, input_ids, position, self_k, self_v, cross_k, cross_v):
        x = self.embed_tokens(input_ids)[:, None, :] + self.positions[position + self.position_offset][None]
        x = self.layernorm_embedding(x)
        mask = position_mask(position, self.max_length)
        x, new_k, new_v = run_layers(
            self.layers,
            x,
            position,
            mask,
            self_k,
            self_v,
            cross_k,
            cross_v,
            num_heads=self.num_heads,
            activation=self.act,
            scaling=self.scaling,
            scale_queries=False,
        )  # BART's SDPA path scales inside the product
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(x[:, 0, :], weight, None if self.lm_head is None else self.lm_head.bias)
        if self.logits_bias is not None:
            logits = logits + self.logits_bias
        return logits.float(), new_k, new_v


def cache_shape(model) -> dict:
    """Layer count, heads and head size of the BART decoder's caches."""
    cfg = model.config.text_config
    return {
        "layers": cfg.decoder_layers,
        "heads": cfg.decoder_attention_heads,
        "head_dim": cfg.d_model // cfg.decoder_attention_heads,
    }


def _refuse(config) -> str | None:
    if getattr(config, "auto_map", None):
        return (
            "this Florence-2 checkpoint needs its own remote code (microsoft/Florence-2-*), which CaptionKit does "
            "not run; export the converted checkpoint that transformers' native Florence2ForConditionalGeneration "
            "loads instead, e.g. florence-community/Florence-2-base or florence-community/Florence-2-large"
        )
    return None


def _prepare(loaded, task: str | None) -> None:
    """Fix the task: its prompt ids (as Florence2Processor expands them) and the processor, for parity."""
    from transformers import AutoProcessor

    task = task or DEFAULT_TASK
    if task not in TEXT_TASKS:
        raise UnsupportedModel(
            f"--task {task!r}: CaptionKit exports the Florence-2 tasks that answer in text "
            f"({', '.join(TEXT_TASKS)}); tasks that return boxes or polygons (<OD>, "
            "<DENSE_REGION_CAPTION>, <CAPTION_TO_PHRASE_GROUNDING>, <OCR_WITH_REGION>...) are not"
        )
    revision = loaded.source["revision"]
    processor = AutoProcessor.from_pretrained(
        loaded.source["model"], revision=None if revision == "local" else revision
    )
    size = loaded.processor.size
    blank = PIL.Image.new("RGB", (size["width"], size["height"]))
    prompt_ids = processor(text=[task], images=[blank], return_tensors="pt")["input_ids"][0]
    loaded.extras.update(task=task, processor=processor, prompt_ids=prompt_ids)


def _hf_text(loaded, ids: list[int]) -> str:
    """What a user of HF reads: batch_decode keeping special tokens, then post_process_generation for the task."""
    processor, task = loaded.extras["processor"], loaded.extras["task"]
    text = processor.batch_decode([ids], skip_special_tokens=False)[0]
    return processor.post_process_generation(text, task=task, image_size=(1, 1))[task]


FAMILY = Family(
    name="florence2",
    description="Florence2ForConditionalGeneration (transformers' native class, florence-community/Florence-2-*), "
    f"tasks {', '.join(TEXT_TASKS)}",
    matches=lambda config: getattr(config, "model_type", None) == "florence2",
    refuse=_refuse,
    model_class="Florence2ForConditionalGeneration",
    prepare=_prepare,
    wrap=lambda loaded, max_length: (
        Florence2Encoder(loaded.model, loaded.extras["prompt_ids"]),
        Florence2Step(loaded.model, max_length),
        cache_shape(loaded.model),
    ),
    # post_process_generation's "pure_text": the special tokens stay, then the literal <s> and </s> go
    text={"skip_special_tokens": False, "remove": ["<s>", "</s>"], "strip": True},
    hf_inputs=lambda loaded, pixels: {
        "pixel_values": pixels,
        "input_ids": loaded.extras["prompt_ids"][None].expand(pixels.shape[0], -1),
    },
    hf_text=_hf_text,
)
