"""Qwen 3 (dense): Llama's block with an RMSNorm on each query and key head before the rope."""
from __future__ import annotations

import torch

from ..layers import AttentionBatch
from . import register
from .base import Builder, DecoderModel


class Qwen3Block:
    def __init__(self, b: Builder, i: int) -> None:
        p = f"model.layers.{i}."
        self.input_norm = b.norm(p + "input_layernorm")
        self.attn = b.attention(i, p + "self_attn.", qk_norm=True)
        self.post_norm = b.norm(p + "post_attention_layernorm")
        self.mlp = b.mlp(p + "mlp.")

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None, batch: AttentionBatch,
                 cache_k: torch.Tensor, cache_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, residual = self.input_norm(x, residual)
        h, residual = self.post_norm(self.attn(h, batch, cache_k, cache_v), residual)
        return self.mlp(h), residual


@register("qwen3")
def build(b: Builder) -> DecoderModel:
    return b.decoder(Qwen3Block)
