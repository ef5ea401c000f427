"""Linears over a GGUF's own blocks (filled in by the GGUF-blocks work)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .gguf_weights import GGUFWeights
    from .layers import Linear
    from .models import Builder


def gguf_linear(weights: GGUFWeights, names: list[str], build: Builder) -> Linear | None:
    """None: the builder makes the layer from dequantized weights."""
    return None
