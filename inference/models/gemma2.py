"""Gemma 2: sandwich norms (before and after attention and MLP) scaling by ``1 + w``, embeddings
times sqrt(hidden), GELU-tanh MLP, attention scaled by ``query_pre_attn_scalar`` with soft-capped
scores, sliding and global layers alternating, soft-capped logits."""
from __future__ import annotations

import torch

from ..layers import AttentionBatch
from . import register
from .base import Builder, DecoderModel


class Gemma2Block:
    def __init__(self, b: Builder, i: int, qk_norm: bool = False) -> None:
        c, p = b.config, f"model.layers.{i}."
        self.input_norm = b.norm(p + "input_layernorm", offset=1.0)
        self.attn = b.attention(i, p + "self_attn.", qk_norm=qk_norm, norm_offset=1.0,
                                scale=c.query_pre_attn_scalar ** -0.5,
                                softcap=getattr(c, "attn_logit_softcapping", None))
        self.post_attn_norm = b.norm(p + "post_attention_layernorm", offset=1.0)
        self.pre_mlp_norm = b.norm(p + "pre_feedforward_layernorm", offset=1.0)
        self.mlp = b.mlp(p + "mlp.")
        self.post_mlp_norm = b.norm(p + "post_feedforward_layernorm", offset=1.0)

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None, batch: AttentionBatch,
                 cache_k: torch.Tensor, cache_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, residual = self.input_norm(x, residual)
        h, _ = self.post_attn_norm(self.attn(h, batch, cache_k, cache_v))
        h, residual = self.pre_mlp_norm(h, residual)
        return self.post_mlp_norm(self.mlp(h))[0], residual


@register("gemma2")
def build(b: Builder) -> DecoderModel:
    return b.decoder(Gemma2Block, norm_offset=1.0, embed_scale=b.config.hidden_size ** 0.5,
                     final_softcap=getattr(b.config, "final_logit_softcapping", None))
