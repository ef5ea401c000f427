"""Gemma 3 (text): Gemma 2's block without score soft-capping but with an RMSNorm on each query
and key head; local (sliding) layers take their own rope base (``rope_parameters`` keyed by
layer type), five local to one global."""
from __future__ import annotations

from functools import partial

from . import register
from .base import Builder, DecoderModel
from .gemma2 import Gemma2Block


@register("gemma3_text", "gemma3")
def build(b: Builder) -> DecoderModel:
    return b.decoder(partial(Gemma2Block, qk_norm=True), norm_offset=1.0, embed_scale=b.config.hidden_size ** 0.5,
                     final_softcap=getattr(b.config, "final_logit_softcapping", None))
