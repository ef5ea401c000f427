"""Llama 1/2/3.x (any static rope: default, ``llama3``, linear, yarn), SmolLM, TinyLlama:
pre-norm blocks, grouped-query attention, SiLU-gated MLP; biases where the weights have them.
Qwen 3 and Phi 3 use this block with their differences as arguments."""
from __future__ import annotations

import torch

from ..layers import AttentionBatch
from . import register
from .base import Builder, DecoderModel


class LlamaBlock:
    def __init__(self, b: Builder, i: int, *, qk_norm: bool = False,
                 qkv: tuple[str, ...] = ("q_proj", "k_proj", "v_proj"),
                 gate_up: tuple[str, ...] = ("gate_proj", "up_proj")) -> None:
        p = f"model.layers.{i}."
        self.input_norm = b.norm(p + "input_layernorm")
        self.attn = b.attention(i, p + "self_attn.", qkv, qk_norm=qk_norm)
        self.post_norm = b.norm(p + "post_attention_layernorm")
        self.mlp = b.mlp(p + "mlp.", gate_up)

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None, batch: AttentionBatch,
                 cache_k: torch.Tensor, cache_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, residual = self.input_norm(x, residual)
        h, residual = self.post_norm(self.attn(h, batch, cache_k, cache_v), residual)
        return self.mlp(h), residual


@register("llama")
def build(b: Builder) -> DecoderModel:
    return b.decoder(LlamaBlock)
