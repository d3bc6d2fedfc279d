"""The TrOCR family (microsoft/trocr-*: VisionEncoderDecoder, ViT/DeiT + TrOCRForCausalLM): encoder and step modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.families.base import Family, vision_encoder_decoder
from export.families.post_norm import run_layers, step_layers
from export.wrap_common import position_mask, split_heads, without_pooler


def _decoder(model):
    return model.decoder.model.decoder  # TrOCRForCausalLM -> TrOCRDecoderWrapper -> TrOCRDecoder


class TrocrEncoder(nn.Module):
    """Pixels in; every decoder layer's cross-attention keys and values out ([L, B, H, S, D] each)."""

    def __init__(self, model):
        super().__init__()
        self.vision = without_pooler(model.encoder)
        self.proj = getattr(model, "enc_to_dec_proj", None)
        layers = _decoder(model).layers
        self.cross_kv = nn.ModuleList(
            nn.ModuleDict({"k": layer.encoder_attn.k_proj, "v": layer.encoder_attn.v_proj}) for layer in layers
        )
        self.num_heads = layers[0].encoder_attn.num_heads

    def forward(self, pixel_values: torch.Tensor):
        states = self.vision(pixel_values=pixel_values).last_hidden_state
        if self.proj is not None:
            states = self.proj(states)
        keys = [split_heads(kv["k"](states), self.num_heads) for kv in self.cross_kv]
        values = [split_heads(kv["v"](states), self.num_heads) for kv in self.cross_kv]
        return torch.stack(keys), torch.stack(values)


class TrocrStep(nn.Module):
    """One TrOCR token step (post-norm layers, scaled queries) over an explicit fixed-length self-attention cache."""

    def __init__(self, model, max_length: int):
        super().__init__()
        decoder = _decoder(model)
        config = model.decoder.config
        self.embed_tokens = decoder.embed_tokens  # scales by sqrt(d_model) itself when scale_embedding is set
        positions = decoder.embed_positions
        if config.use_learned_position_embeddings:  # rows offset by 2 (fairseq's layout)
            self.positions, self.first_position = positions, positions.offset
        else:  # sinusoidal: a non-pad token at step t sits at padding_idx + 1 + t
            self.register_buffer(
                "sinusoids", positions.weights[: positions.padding_idx + 1 + max_length].clone(), persistent=True
            )
            self.positions, self.first_position = None, positions.padding_idx + 1
        self.layernorm_embedding = decoder.layernorm_embedding
        self.layers = step_layers(decoder.layers)
        self.activation = decoder.layers[0].activation_fn
        self.scaling = decoder.layers[0].self_attn.scaling
        head = model.decoder.output_projection
        self.head = None if head.weight is self.embed_tokens.weight else head  # a tied head is held once
        self.num_heads = decoder.layers[0].self_attn.num_heads
        self.max_length = max_length

    def _position(self, position: torch.Tensor) -> torch.Tensor:
        index = position + self.first_position
        table = self.sinusoids if self.positions is None else self.positions.weight
        return table.index_select(0, index)[None, :, :]

    def forward(self, input_ids, position, self_k, self_v, cross_k, cross_v):
        x = self.embed_tokens(input_ids)[:, None, :]
        x = x + self._position(position).to(x.dtype)
        if self.layernorm_embedding is not None:
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
            activation=self.activation,
            scaling=self.scaling,
            scale_queries=True,
        )  # TrOCR scales the queries before the product
        logits = F.linear(x, self.embed_tokens.weight) if self.head is None else self.head(x)
        return logits[:, 0, :].float(), new_k, new_v


def cache_shape(model) -> dict:
    """Layer count, heads and head size of the decoder's caches."""
    cfg = model.decoder.config
    return {
        "layers": cfg.decoder_layers,
        "heads": cfg.decoder_attention_heads,
        "head_dim": cfg.hidden_size // cfg.decoder_attention_heads,
    }


def _materialise_sinusoids(model) -> None:
    """trocr-small's sinusoidal table is a plain attribute that `from_pretrained` leaves on the meta device
    (transformers 5.24: its own `generate` then fails with "Cannot copy out of meta tensor"); rebuild it."""
    positions = _decoder(model).embed_positions
    if getattr(positions, "weights", None) is not None and positions.weights.is_meta:
        positions.weights = positions.get_embedding(
            positions.weights.shape[0], positions.embedding_dim, positions.padding_idx
        )


FAMILY = Family(
    name="trocr",
    description="VisionEncoderDecoderModel with a ViT or DeiT encoder and a TrOCR decoder (microsoft/trocr-*)",
    matches=vision_encoder_decoder("trocr"),
    model_class="VisionEncoderDecoderModel",
    wrap=lambda loaded, max_length: (
        TrocrEncoder(loaded.model),
        TrocrStep(loaded.model, max_length),
        cache_shape(loaded.model),
    ),
    attention="eager",  # TrOCRForCausalLM has no SDPA path in transformers; eager is what its users get
    after_load=_materialise_sinusoids,
)
