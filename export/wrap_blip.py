"""Tensor-only encoder and decoder-step modules for BlipForConditionalGeneration."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.wrap_common import merge_heads, position_mask, split_heads, write_cache


class BlipEncoder(nn.Module):
    """Pixels in; every text-decoder layer's cross-attention keys and values out ([L, B, H, S, D] each)."""

    def __init__(self, model):
        super().__init__()
        self.vision = model.vision_model
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
        self.layers = text.bert.encoder.layer
        self.head = text.cls
        self.num_heads = model.config.text_config.num_attention_heads
        self.max_length = max_length

    def forward(self, input_ids, position, self_k, self_v, cross_k, cross_v):
        emb = self.embeddings
        x = emb.word_embeddings(input_ids)[:, None, :] + emb.position_embeddings(position)[None, :, :]
        x = emb.LayerNorm(x)
        mask = position_mask(position, self.max_length)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            att = layer.attention.self
            keys = write_cache(self_k[i], position, split_heads(att.key(x), self.num_heads))
            vals = write_cache(self_v[i], position, split_heads(att.value(x), self.num_heads))
            new_k.append(keys)
            new_v.append(vals)
            ctx = F.scaled_dot_product_attention(split_heads(att.query(x), self.num_heads), keys, vals, attn_mask=mask)
            x = layer.attention.output(merge_heads(ctx), x)
            cross = layer.crossattention
            q = split_heads(cross.self.query(x), self.num_heads)
            ctx = F.scaled_dot_product_attention(q, cross_k[i], cross_v[i])
            x = cross.output(merge_heads(ctx), x)
            x = layer.output(layer.intermediate(x), x)
        logits = self.head(x)[:, 0, :]
        return logits.float(), torch.stack(new_k), torch.stack(new_v)


def cache_shape(model) -> dict:
    """Layer count, heads and head size of the text decoder's caches."""
    cfg = model.config.text_config
    heads = cfg.num_attention_heads
    return {"layers": cfg.num_hidden_layers, "heads": heads, "head_dim": cfg.hidden_size // heads}
