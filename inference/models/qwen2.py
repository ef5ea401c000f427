"""Qwen 2 / 2.5 and DeepSeek-R1-Distill-Qwen: Llama's block with biases on Q, K and V (read
from the weights by ``Builder.linear``); sliding layers only where ``use_sliding_window``
marks them in ``layer_types``."""
from __future__ import annotations

from . import register
from .base import Builder, DecoderModel
from .llama import LlamaBlock


@register("qwen2")
def build(b: Builder) -> DecoderModel:
    return b.decoder(LlamaBlock)
