"""nn.MultiheadAttention, decomposed: its forward uses ``out_proj.weight`` directly (the
submodule's forward never runs) and hides the projections in one fused function, so during a
capture it runs as the same computation written with recorded projections.

Covers packed and separate q/k/v projections, biases, ``add_bias_kv``, ``add_zero_attn``,
``kdim`` / ``vdim``, boolean and float ``attn_mask`` (2-D or 3-D) and ``key_padding_mask``,
``is_causal``, dropout on the attention weights, ``need_weights`` / ``average_attn_weights`` and
both ``batch_first`` settings. Every projection is a linear map applied at each position, so
its per-sample products are the ghost products of a Linear layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Rule, UnsupportedModuleError, register_rule


def _float_mask(mask: Tensor | None, dtype: torch.dtype, name: str) -> Tensor | None:
    """A boolean mask (True = not allowed) as -inf / 0, a float mask as it is."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    if not torch.is_floating_point(mask):
        raise UnsupportedModuleError(f"MultiheadAttention: {name} must be bool or float, got {mask.dtype}")
    return mask.to(dtype)


class MultiheadAttentionRule(Rule):
    decomposes = True

    def covers(self, module: nn.Module) -> list[nn.Module]:
        return [module.out_proj]

    def forward(
        self,
        m: nn.MultiheadAttention,
        rec,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ):
        if query.dim() != 3:
            raise UnsupportedModuleError(
                f"MultiheadAttention got an unbatched query of shape {tuple(query.shape)}: per-sample products "
                "need a batch"
            )
        self_attention = query is key and key is value
        if not m.batch_first:  # work batch-first: (B, L, E)
            query, key, value = (
                query.transpose(0, 1),
                key.transpose(0, 1),
                value.transpose(0, 1),
            )
        bsz, tgt_len, embed = query.shape
        heads, head_dim = m.num_heads, m.head_dim
        dtype = query.dtype

        # projections, recorded (rows of the packed weight when q, k, v see different inputs)
        if m._qkv_same_embed_dim and self_attention:
            q, k, v = rec.linear(m, query, "in_proj_weight", "in_proj_bias").chunk(3, -1)
        elif m._qkv_same_embed_dim:
            q = rec.linear(m, query, "in_proj_weight", "in_proj_bias", rows=(0, embed))
            k = rec.linear(m, key, "in_proj_weight", "in_proj_bias", rows=(embed, 2 * embed))
            v = rec.linear(m, value, "in_proj_weight", "in_proj_bias", rows=(2 * embed, 3 * embed))
        else:
            has_bias = m.in_proj_bias is not None
            q = rec.linear(
                m,
                query,
                "q_proj_weight",
                "in_proj_bias" if has_bias else None,
                bias_rows=(0, embed),
            )
            k = rec.linear(
                m,
                key,
                "k_proj_weight",
                "in_proj_bias" if has_bias else None,
                bias_rows=(embed, 2 * embed),
            )
            v = rec.linear(
                m,
                value,
                "v_proj_weight",
                "in_proj_bias" if has_bias else None,
                bias_rows=(2 * embed, 3 * embed),
            )

        key_padding_mask = _float_mask(key_padding_mask, dtype, "key_padding_mask")
        if is_causal and attn_mask is None:
            raise RuntimeError(
                "Need attn_mask if specifying the is_causal hint. You may use the Transformer module "
                "method `generate_square_subsequent_mask` to create this mask."
            )
        if is_causal and key_padding_mask is None and not need_weights:
            # torch then ignores the mask given and applies the causal one
            attn_mask = torch.ones(tgt_len, key.shape[1], dtype=torch.bool, device=query.device).triu(1)
        attn_mask = _float_mask(attn_mask, dtype, "attn_mask")

        if m.bias_k is not None:
            k = torch.cat([k, rec.parameter(m, "bias_k", m.bias_k.expand(bsz, 1, embed))], 1)
            v = torch.cat([v, rec.parameter(m, "bias_v", m.bias_v.expand(bsz, 1, embed))], 1)
            attn_mask = F.pad(attn_mask, (0, 1)) if attn_mask is not None else None
            key_padding_mask = F.pad(key_padding_mask, (0, 1)) if key_padding_mask is not None else None

        q = q.reshape(bsz, tgt_len, heads, head_dim).transpose(1, 2)  # (B, H, L, hd)
        k = k.reshape(bsz, -1, heads, head_dim).transpose(1, 2)  # (B, H, S, hd)
        v = v.reshape(bsz, -1, heads, head_dim).transpose(1, 2)
        if m.add_zero_attn:
            k = torch.cat([k, k.new_zeros(bsz, heads, 1, head_dim)], 2)
            v = torch.cat([v, v.new_zeros(bsz, heads, 1, head_dim)], 2)
            attn_mask = F.pad(attn_mask, (0, 1)) if attn_mask is not None else None
            key_padding_mask = F.pad(key_padding_mask, (0, 1)) if key_padding_mask is not None else None
        src_len = k.shape[2]

        scores = (q * (1.0 / math.sqrt(head_dim))) @ k.transpose(-2, -1)  # (B, H, L, S)
        if attn_mask is not None:
            if attn_mask.dim() == 2:
                scores = scores + attn_mask.view(1, 1, tgt_len, src_len)
            else:  # (B * H, L, S)
                scores = scores + attn_mask.view(bsz, heads, tgt_len, src_len)
        if key_padding_mask is not None:
            scores = scores + key_padding_mask.view(bsz, 1, 1, src_len)
        weights = scores.softmax(-1)
        if m.training and m.dropout > 0.0:
            weights = F.dropout(weights, p=m.dropout)
        out = (weights @ v).transpose(1, 2).reshape(bsz, tgt_len, embed)
        out = rec.linear(m.out_proj, out, "weight", "bias")
        if not m.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(1) if average_attn_weights else weights


register_rule(nn.MultiheadAttention, MultiheadAttentionRule())
