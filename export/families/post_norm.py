"""The decoder step of post-norm (BART-style) layers, shared by TrOCR and Florence-2's BART decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.wrap_common import merge_heads, split_heads, write_cache


def step_layers(layers) -> nn.ModuleList:
    """Only what a step uses of each layer: the cross-attention K/V projections live in the encoder program."""
    return nn.ModuleList(
        nn.ModuleDict(
            {
                "q": layer.self_attn.q_proj,
                "k": layer.self_attn.k_proj,
                "v": layer.self_attn.v_proj,
                "out": layer.self_attn.out_proj,
                "ln_1": layer.self_attn_layer_norm,
                "q_x": layer.encoder_attn.q_proj,
                "out_x": layer.encoder_attn.out_proj,
                "ln_x": layer.encoder_attn_layer_norm,
                "fc1": layer.fc1,
                "fc2": layer.fc2,
                "ln_2": layer.final_layer_norm,
            }
        )
        for layer in layers
    )


def run_layers(
    layers: nn.ModuleList,
    x,
    position,
    mask,
    self_k,
    self_v,
    cross_k,
    cross_v,
    *,
    num_heads: int,
    activation,
    scaling: float,
    scale_queries: bool,
):
    """(x, new self keys, new self values) after every layer: attention, cross-attention and MLP, each followed by
    its norm. `scale_queries`: multiply the queries by `scaling` before the product, as TrOCR's attention does
    (BART's SDPA path scales inside the product instead); the two round differently."""
    new_k, new_v = [], []
    sdpa_scale = 1.0 if scale_queries else scaling
    queries = (lambda q: q * scaling) if scale_queries else (lambda q: q)  # noqa: E731
    for i, layer in enumerate(layers):
        keys = write_cache(self_k[i], position, split_heads(layer["k"](x), num_heads))
        vals = write_cache(self_v[i], position, split_heads(layer["v"](x), num_heads))
        new_k.append(keys)
        new_v.append(vals)
        q = split_heads(queries(layer["q"](x)), num_heads)
        att = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask, scale=sdpa_scale)
        x = layer["ln_1"](x + layer["out"](merge_heads(att)))
        q = split_heads(queries(layer["q_x"](x)), num_heads)
        att = F.scaled_dot_product_attention(q, cross_k[i], cross_v[i], scale=sdpa_scale)
        x = layer["ln_x"](x + layer["out_x"](merge_heads(att)))
        x = layer["ln_2"](x + layer["fc2"](activation(layer["fc1"](x))))
    return x, torch.stack(new_k), torch.stack(new_v)
