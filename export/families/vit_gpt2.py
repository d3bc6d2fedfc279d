"""The ViT/DeiT + GPT-2 family (nlpconnect/vit-gpt2-image-captioning): tensor-only encoder and decoder-step modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.families.base import Family, vision_encoder_decoder
from export.wrap_common import merge_heads, position_mask, split_heads, without_pooler, write_cache


class VitGpt2Encoder(nn.Module):
    """Pixels in; every decoder layer's cross-attention keys and values out ([L, B, H, S, D] each)."""

    def __init__(self, model):
        super().__init__()
        self.vision = without_pooler(model.encoder)
        self.proj = getattr(model, "enc_to_dec_proj", None)
        self.cross_kv = nn.ModuleList(block.crossattention.c_attn for block in model.decoder.transformer.h)
        self.num_heads = model.decoder.config.n_head
        self.width = model.decoder.config.n_embd

    def forward(self, pixel_values: torch.Tensor):
        states = self.vision(pixel_values=pixel_values).last_hidden_state
        if self.proj is not None:
            states = self.proj(states)
        keys, values = [], []
        for c_attn in self.cross_kv:
            k, v = c_attn(states).split(self.width, dim=2)
            keys.append(split_heads(k, self.num_heads))
            values.append(split_heads(v, self.num_heads))
        return torch.stack(keys), torch.stack(values)


class Gpt2Step(nn.Module):
    """One GPT-2 token step over an explicit fixed-length self-attention cache."""

    def __init__(self, model, max_length: int):
        super().__init__()
        decoder = model.decoder
        self.wte = decoder.transformer.wte
        self.wpe = decoder.transformer.wpe
        # Only what a step uses: the cross-attention K/V projections live in the encoder program.
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "ln_1": b.ln_1,
                    "qkv": b.attn.c_attn,
                    "proj": b.attn.c_proj,
                    "ln_x": b.ln_cross_attn,
                    "q_x": b.crossattention.q_attn,
                    "proj_x": b.crossattention.c_proj,
                    "ln_2": b.ln_2,
                    "mlp": b.mlp,
                }
            )
            for b in decoder.transformer.h
        )
        self.scaling = [(b.attn.scaling, b.crossattention.scaling) for b in decoder.transformer.h]
        self.ln_f = decoder.transformer.ln_f
        # A tied head is the embedding matrix: hold it once, or export stores it twice (150 MiB for GPT-2).
        self.lm_head = None if decoder.lm_head.weight is self.wte.weight else decoder.lm_head
        self.num_heads = decoder.config.n_head
        self.width = decoder.config.n_embd
        self.max_length = max_length

    def forward(self, input_ids, position, self_k, self_v, cross_k, cross_v):
        x = self.wte(input_ids)[:, None, :] + self.wpe(position)[None, :, :]
        mask = position_mask(position, self.max_length)
        new_k, new_v = [], []
        for i, block in enumerate(self.blocks):
            q, k, v = block["qkv"](block["ln_1"](x)).split(self.width, dim=2)
            keys = write_cache(self_k[i], position, split_heads(k, self.num_heads))
            vals = write_cache(self_v[i], position, split_heads(v, self.num_heads))
            new_k.append(keys)
            new_v.append(vals)
            att = F.scaled_dot_product_attention(
                split_heads(q, self.num_heads), keys, vals, attn_mask=mask, scale=self.scaling[i][0]
            )
            x = x + block["proj"](merge_heads(att))
            q = block["q_x"](block["ln_x"](x))
            att = F.scaled_dot_product_attention(
                split_heads(q, self.num_heads), cross_k[i], cross_v[i], scale=self.scaling[i][1]
            )
            x = x + block["proj_x"](merge_heads(att))
            x = x + block["mlp"](block["ln_2"](x))
        x = self.ln_f(x)
        logits = (F.linear(x, self.wte.weight) if self.lm_head is None else self.lm_head(x))[:, 0, :]
        return logits.float(), torch.stack(new_k), torch.stack(new_v)


def cache_shape(model) -> dict:
    """Layer count, heads and head size of the decoder's caches."""
    cfg = model.decoder.config
    return {"layers": cfg.n_layer, "heads": cfg.n_head, "head_dim": cfg.n_embd // cfg.n_head}


FAMILY = Family(
    name="vit-gpt2",
    description="VisionEncoderDecoderModel with a ViT or DeiT encoder and a GPT-2 decoder",
    matches=vision_encoder_decoder("gpt2"),
    model_class="VisionEncoderDecoderModel",
    wrap=lambda loaded, max_length: (
        VitGpt2Encoder(loaded.model),
        Gpt2Step(loaded.model, max_length),
        cache_shape(loaded.model),
    ),
)
