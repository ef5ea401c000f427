"""Qwen 3 (dense): Llama's block with an RMSNorm on each query and key head before the rope."""
from __future__ import annotations

from functools import partial

from . import register
from .base import Builder, DecoderModel
from .llama import LlamaBlock


@register("qwen3")
def build(b: Builder) -> DecoderModel:
    return b.decoder(partial(LlamaBlock, qk_norm=True))
