"""Phi 3 / 3.5 / 4-mini: Llama's block with Q, K and V in one weight (``qkv_proj``) and gate
and up in one (``gate_up_proj``); a partial rotary dimension where the config has one."""
from __future__ import annotations

from functools import partial

from . import register
from .base import Builder, DecoderModel
from .llama import LlamaBlock


@register("phi3")
def build(b: Builder) -> DecoderModel:
    return b.decoder(partial(LlamaBlock, qkv=("qkv_proj",), gate_up=("gate_up_proj",)))
