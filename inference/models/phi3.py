"""Phi 3 / 3.5 / 4-mini: Llama's block with Q, K and V in one weight (``qkv_proj``) and gate
and up in one (``gate_up_proj``); a partial rotary dimension where the config has one."""
from __future__ import annotations

import torch

from ..layers import AttentionBatch
from . import register
from .base import Builder, DecoderModel


class Phi3Block:
    def __init__(self, b: Builder, i: int) -> None:
        p = f"model.layers.{i}."
        self.input_norm = b.norm(p + "input_layernorm")
        self.attn = b.attention(i, p + "self_attn.", qkv=("qkv_proj",))
        self.post_norm = b.norm(p + "post_attention_layernorm")
        self.mlp = b.mlp(p + "mlp.", gate_up=("gate_up_proj",))

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None, batch: AttentionBatch,
                 cache_k: torch.Tensor, cache_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, residual = self.input_norm(x, residual)
        h, residual = self.post_norm(self.attn(h, batch, cache_k, cache_v), residual)
        return self.mlp(h), residual


@register("phi3")
def build(b: Builder) -> DecoderModel:
    return b.decoder(Phi3Block)
