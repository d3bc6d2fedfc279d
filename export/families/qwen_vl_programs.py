"""Qwen-VL's two programs: vision tower + merger + the prompt's prefill (the KV prefix), and one language-model step.

The image size and the prompt are fixed at export, so every grid-dependent quantity (vision rotary angles,
Qwen2.5-VL's window order and masks, Qwen3-VL's interpolated position embeddings, the prompt's M-RoPE positions)
is computed once here with transformers' own functions and kept as a constant; the programs hold no `grid_thw`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.wrap_common import position_mask, write_cache


def patchify(pixels: torch.Tensor, patch: int, merge: int, temporal: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W/patch^2, C*temporal*patch^2] in Qwen2VLImageProcessor's order (the frame repeated)."""
    b, c, h, w = pixels.shape
    gh, gw = h // patch, w // patch
    x = pixels.reshape(b, c, gh // merge, merge, patch, gw // merge, merge, patch).permute(0, 2, 5, 3, 6, 1, 4, 7)
    x = x.unsqueeze(6).expand(b, gh // merge, gw // merge, merge, merge, c, temporal, patch, patch)
    return x.reshape(b, gh * gw, c * temporal * patch * patch)


def unpatchify(patches: torch.Tensor, size: tuple[int, int], patch: int, merge: int, temporal: int) -> torch.Tensor:
    """The inverse of `patchify` (first frame): HF's flat pixel_values of same-size images back to [B, C, H, W]."""
    h, w = size
    gh, gw = h // patch, w // patch
    x = patches.reshape(-1, gh // merge, gw // merge, merge, merge, 3, temporal, patch, patch)[:, :, :, :, :, :, 0]
    return x.permute(0, 5, 1, 3, 6, 2, 4, 7).reshape(-1, 3, h, w)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class QwenVision(nn.Module):
    """Pixels [B, 3, H, W] -> image embeddings [B, tokens, width] (and Qwen3-VL's DeepStack features)."""

    def __init__(self, visual, grid: tuple[int, int, int]):
        super().__init__()
        from transformers import vision_utils as vu

        cfg = visual.config
        self.patch, self.merge, self.temporal = cfg.patch_size, cfg.spatial_merge_size, cfg.temporal_patch_size
        self.proj = visual.patch_embed.proj
        self.blocks, self.merger = visual.blocks, visual.merger
        self.num_heads = cfg.num_heads
        grid_thw = torch.tensor([grid])
        with torch.no_grad():
            cos, sin = visual.rotary_pos_emb(grid_thw, vu.get_vision_position_ids(grid_thw, self.merge))
            pos = None
            if hasattr(visual, "pos_embed"):  # Qwen3-VL: learned positions resampled to this grid, a constant
                index, weight = vu.get_vision_interpolation_indices_and_weights(
                    grid_thw,
                    num_grid_per_side=visual.num_grid_per_side,
                    mode=visual.interpolation_mode,
                    align_corners=visual.interpolation_align_corners,
                    spatial_merge_size=self.merge,
                )
                pos = (visual.pos_embed(index) * weight[:, :, None]).sum(1).to(self.proj.weight.dtype)
        self.register_buffer("pos", pos, persistent=False)
        unit, masks, order = self.merge**2, [None] * len(self.blocks), None
        if hasattr(cfg, "fullatt_block_indexes"):  # Qwen2.5-VL: windows of patches, a few blocks attend to all
            window_index, cu = vu.get_vision_window_index(grid_thw, self.merge, cfg.window_size, self.patch)
            order = (window_index[:, None] * unit + torch.arange(unit)).flatten()
            segment = torch.bucketize(torch.arange(order.numel()), cu[1:].long(), right=True)
            window = (segment[:, None] == segment[None, :])[None, None]
            masks = [None if i in cfg.fullatt_block_indexes else window for i in range(len(self.blocks))]
            cos, sin = cos[order], sin[order]
            self.register_buffer("reverse", torch.argsort(window_index), persistent=False)
        self.register_buffer("order", order, persistent=False)
        for i, m in enumerate(masks):
            self.register_buffer(f"mask{i}", m, persistent=False)
        self.register_buffer("cos", cos.float(), persistent=False)
        self.register_buffer("sin", sin.float(), persistent=False)
        self.deepstack = list(getattr(cfg, "deepstack_visual_indexes", ()) or ())
        self.deepstack_mergers = getattr(visual, "deepstack_merger_list", None)

    def _attend(self, attn, x: torch.Tensor, mask) -> torch.Tensor:
        b, n, e = x.shape
        q, k, v = attn.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 1, 3, 4).unbind(0)
        cos, sin = self.cos[:, None, :], self.sin[:, None, :]
        # transformers' apply_rotary_pos_emb_vision: the rotation in float32
        q = (q.float() * cos + _rotate_half(q.float()) * sin).to(v.dtype)
        k = (k.float() * cos + _rotate_half(k.float()) * sin).to(v.dtype)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=attn.scaling
        )
        return attn.proj(out.transpose(1, 2).reshape(b, n, e))

    def forward(self, pixels: torch.Tensor):
        patches = patchify(pixels, self.patch, self.merge, self.temporal).to(self.proj.weight.dtype)
        b = patches.shape[0]
        # a Conv3d whose kernel is its stride is one matrix product per patch
        x = F.linear(patches, self.proj.weight.reshape(self.proj.weight.shape[0], -1), self.proj.bias)
        if self.pos is not None:
            x = x + self.pos
        if self.order is not None:
            x = x.index_select(1, self.order)
        features = []
        for i, block in enumerate(self.blocks):
            x = x + self._attend(block.attn, block.norm1(x), getattr(self, f"mask{i}"))
            x = x + block.mlp(block.norm2(x))
            if i in self.deepstack:
                merger = self.deepstack_mergers[self.deepstack.index(i)]
                features.append(merger(x.reshape(-1, x.shape[-1])).reshape(b, -1, merger.linear_fc2.out_features))
        out = self.merger(x.reshape(-1, x.shape[-1]))
        out = out.reshape(b, -1, out.shape[-1])
        if self.order is not None:
            out = out.index_select(1, self.reverse)
        return out, features


def _qkv(attn, h: torch.Tensor):
    """[B, S, E] -> queries, keys, values [B, heads, S, head_dim] (Qwen3's per-head norms when it has them)."""
    b, s, _ = h.shape
    q = attn.q_proj(h).view(b, s, -1, attn.head_dim)
    k = attn.k_proj(h).view(b, s, -1, attn.head_dim)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    return q.transpose(1, 2), k.transpose(1, 2), attn.v_proj(h).view(b, s, -1, attn.head_dim).transpose(1, 2)


def _rope(q, k, cos, sin):
    cos, sin = cos[:, None], sin[:, None]
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _mlp_out(layer, x, attn_out):
    x = x + layer.self_attn.o_proj(attn_out)
    return x + layer.mlp(layer.post_attention_layernorm(x))


class QwenPrefill(nn.Module):
    """Pixels in; the language model's keys and values over the prompt but its last token ([L, B, kv_heads, P-1, D]).

    The last prompt token goes through the step program as the decoder's start token, so the runtime's loop needs
    nothing of its own: the prefix plays the role the cross-attention keys and values play for the other families.
    """

    def __init__(
        self,
        model,
        prompt_ids: torch.Tensor,
        image_start: int,
        image_tokens: int,
        positions: torch.Tensor,
        grid: tuple[int, int, int],
    ):
        super().__init__()
        inner = model.model
        self.vision = QwenVision(inner.visual, grid)
        text = inner.language_model
        self.layers, self.start, self.count = text.layers, image_start, image_tokens
        ids = prompt_ids[:-1]
        with torch.no_grad():
            embeds = text.embed_tokens(ids).detach()
            # the prompt's M-RoPE angles, exactly as transformers computes them for these positions
            cos, sin = text.rotary_emb(embeds[None], positions[:, None, :-1])
        self.register_buffer("before", embeds[:image_start].clone(), persistent=False)
        self.register_buffer("after", embeds[image_start + image_tokens :].clone(), persistent=False)
        self.register_buffer("cos", cos.clone(), persistent=False)
        self.register_buffer("sin", sin.clone(), persistent=False)

    def forward(self, pixels: torch.Tensor):
        image, deepstack = self.vision(pixels)
        b = image.shape[0]
        image = image.to(self.before.dtype)
        x = torch.cat([self.before[None].expand(b, -1, -1), image, self.after[None].expand(b, -1, -1)], dim=1)
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            q, k, v = _qkv(layer.self_attn, layer.input_layernorm(x))
            q, k = _rope(q, k, self.cos, self.sin)
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=layer.self_attn.scaling, enable_gqa=True
            )
            x = _mlp_out(layer, x, out.transpose(1, 2).reshape(b, x.shape[1], -1))
            if i < len(deepstack):  # Qwen3-VL's DeepStack: vision features added at the image positions
                end = self.start + self.count
                x = torch.cat(
                    [x[:, : self.start], x[:, self.start : end] + deepstack[i].to(x.dtype), x[:, end:]], dim=1
                )
            keys.append(k)
            values.append(v)
        return torch.stack(keys), torch.stack(values)


class QwenStep(nn.Module):
    """One token over the fixed KV prefix and an explicit self-attention cache (the other families' interface)."""

    def __init__(self, model, max_length: int, first_position: int):
        super().__init__()
        text = model.model.language_model
        self.embed_tokens, self.layers, self.norm = text.embed_tokens, text.layers, text.norm
        self.lm_head = None if model.lm_head.weight is self.embed_tokens.weight else model.lm_head
        self.register_buffer("inv_freq", text.rotary_emb.inv_freq.detach().clone(), persistent=False)
        self.scaling = float(text.rotary_emb.attention_scaling)
        # after the prompt M-RoPE positions are 1-D, continuing from the prompt's largest position (HF's rope_deltas)
        self.first_position = first_position
        self.max_length = max_length

    def forward(self, input_ids, position, self_k, self_v, cross_k, cross_v):
        x = self.embed_tokens(input_ids)[:, None, :]
        b = x.shape[0]
        # text positions are equal in all three M-RoPE sections, so the rotation is plain RoPE
        freqs = (position + self.first_position).float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = (emb.cos() * self.scaling).to(x.dtype)[None], (emb.sin() * self.scaling).to(x.dtype)[None]
        prefix = torch.arange(cross_k.shape[3], device=x.device).view(1, 1, 1, -1) >= 0  # all True
        mask = torch.cat([prefix, position_mask(position, self.max_length)], dim=-1)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            q, k, v = _qkv(layer.self_attn, layer.input_layernorm(x))
            q, k = _rope(q, k, cos, sin)
            sk, sv = write_cache(self_k[i], position, k), write_cache(self_v[i], position, v)
            # the attended keys are written apart from the returned cache: AOTInductor (torch 2.13, CPU) returned a
            # wrong first-layer cache when the returned one was also concatenated here
            here = position + cross_k.shape[3]
            keys = write_cache(torch.cat([cross_k[i], self_k[i]], dim=2), here, k)
            values = write_cache(torch.cat([cross_v[i], self_v[i]], dim=2), here, v)
            out = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, scale=layer.self_attn.scaling, enable_gqa=True
            )
            x = _mlp_out(layer, x, out.transpose(1, 2).reshape(b, 1, -1))
            new_k.append(sk)
            new_v.append(sv)
        x = self.norm(x)
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x[:, 0, :], weight).float(), torch.stack(new_k), torch.stack(new_v)
