"""Mistral: Llama's block; a ``sliding_window`` in the config (Mistral 7B v0.1) applies to
every layer (``Builder.window``)."""
from __future__ import annotations

from . import register
from .base import Builder, DecoderModel
from .llama import LlamaBlock


@register("mistral")
def build(b: Builder) -> DecoderModel:
    return b.decoder(LlamaBlock)
