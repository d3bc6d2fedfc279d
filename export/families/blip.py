"""The BLIP captioning family (BlipForConditionalGeneration): tensor-only encoder and decoder-step modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.families.base import Family
from export.wrap_common import merge_heads, position_mask, split_heads, swap_submodules, write_cache


class SdpaVisionAttention(nn.Module):
    """BLIP's vision self-attention (HF has only an eager path: matmul, scale, softmax, matmul) as one SDPA.

    Same projections and weights; SDPA's fused CPU/GPU kernels avoid materialising the 577 x 577 scores.
    """

    def __init__(self, attention):
        super().__init__()
        self.qkv, self.projection = attention.qkv, attention.projection
        self.num_heads, self.scale = attention.num_heads, attention.scale

    def forward(self, hidden_states: torch.Tensor, **_kwargs):
        b, t, e = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(b, t, 3, self.num_heads, e // self.num_heads).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
        return self.projection(context.transpose(1, 2).reshape(b, t, e)), None


def sdpa_vision(vision: nn.Module) -> nn.Module:
    """A view of BLIP's vision model whose layers attend with SDPA; the HF model itself is left as it is."""
    layers = nn.ModuleList(
        swap_submodules(layer, self_attn=SdpaVisionAttention(layer.self_attn)) for layer in vision.encoder.layers
    )
    return swap_submodules(vision, encoder=swap_submodules(vision.encoder, layers=layers))


class BlipEncoder(nn.Module):
    """Pixels in; every text-decoder layer's cross-attention keys and values out ([L, B, H, S, D] each)."""

    def __init__(self, model):
        super().__init__()
        self.vision = sdpa_vision(model.vision_model)
        layers = model.text_decoder.bert.encoder.layer
        self.cross_k = nn.ModuleList(layer.crossattention.self.key for layer in layers)
        self.cross_v = nn.ModuleList(layer.crossattention.self.value for layer in layers)
        self.num_heads = model.config.text_config.num_attention_heads

    def forward(self, pixel_values: torch.Tensor):
        states = self.vision(pixel_values=pixel_values).last_hidden_state
        keys = [split_heads(k(states), self.num_heads) for k in self.cross_k]
        values = [split_heads(v(states), self.num_heads) for v in self.cross_v]
        return torch.stack(keys), torch.stack(values)


class BlipStep(nn.Module):
    """One BLIP text-decoder token step over an explicit fixed-length self-attention cache."""

    def __init__(self, model, max_length: int):
        super().__init__()
        text = model.text_decoder
        self.embeddings = text.bert.embeddings
        # Only what a step uses: the cross-attention K/V projections live in the encoder program.
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "q": layer.attention.self.query,
                    "k": layer.attention.self.key,
                    "v": layer.attention.self.value,
                    "out": layer.attention.output,
                    "q_x": layer.crossattention.self.query,
                    "out_x": layer.crossattention.output,
                    "mid": layer.intermediate,
                    "ffn_out": layer.output,
                }
            )
            for layer in text.bert.encoder.layer
        )
        predictions = text.cls.predictions
        self.transform = predictions.transform
        self.bias = predictions.decoder.bias
        tied = predictions.decoder.weight is self.embeddings.word_embeddings.weight
        # A tied head is the embedding matrix: hold it once, or export stores it twice.
        self.decoder = None if tied else predictions.decoder
        self.num_heads = model.config.text_config.num_attention_heads
        self.max_length = max_length

    def forward(self, input_ids, position, self_k, self_v, cross_k, cross_v):
        emb = self.embeddings
        x = emb.word_embeddings(input_ids)[:, None, :] + emb.position_embeddings(position)[None, :, :]
        x = emb.LayerNorm(x)
        mask = position_mask(position, self.max_length)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            keys = write_cache(self_k[i], position, split_heads(layer["k"](x), self.num_heads))
            vals = write_cache(self_v[i], position, split_heads(layer["v"](x), self.num_heads))
            new_k.append(keys)
            new_v.append(vals)
            q = split_heads(layer["q"](x), self.num_heads)
            x = layer["out"](merge_heads(F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)), x)
            q = split_heads(layer["q_x"](x), self.num_heads)
            x = layer["out_x"](merge_heads(F.scaled_dot_product_attention(q, cross_k[i], cross_v[i])), x)
            x = layer["ffn_out"](layer["mid"](x), x)
        x = self.transform(x)
        if self.decoder is None:
            logits = F.linear(x, self.embeddings.word_embeddings.weight, self.bias)[:, 0, :]
        else:
            logits = self.decoder(x)[:, 0, :]
        return logits.float(), torch.stack(new_k), torch.stack(new_v)


def cache_shape(model) -> dict:
    """Layer count, heads and head size of the text decoder's caches."""
    cfg = model.config.text_config
    heads = cfg.num_attention_heads
    return {"layers": cfg.num_hidden_layers, "heads": heads, "head_dim": cfg.hidden_size // heads}


def _token_ids(model):
    text = model.config.text_config
    return text.bos_token_id, text.sep_token_id, text.pad_token_id


FAMILY = Family(
    name="blip",
    description="BlipForConditionalGeneration",
    matches=lambda config: getattr(config, "model_type", None) == "blip",
    model_class="BlipForConditionalGeneration",
    attention="eager",  # transformers has no SDPA path for BLIP; eager is what its users get
    wrap=lambda loaded, max_length: (
        BlipEncoder(loaded.model),
        BlipStep(loaded.model, max_length),
        cache_shape(loaded.model),
    ),
    token_ids=_token_ids,
)
