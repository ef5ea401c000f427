"""Linears as a family declares them: biases and weights that could not be fused."""
from __future__ import annotations

from typing import Any

import torch

from ..quant import CandidateHead, DenseLinear, HybridLinear

Linear = DenseLinear | HybridLinear | CandidateHead | Any  # Any: gguf blocks, a bitsandbytes module on CUDA


class Biased:
    """``linear(x) + bias`` (Qwen 2's Q/K/V, Phi's and others' biases)."""

    def __init__(self, linear: Linear, bias: torch.Tensor) -> None:
        self.linear = linear
        self.bias = bias  # [N] in the compute dtype
        self.out_features, self.in_features = linear.out_features, linear.in_features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y.add_(self.bias) if y.dtype == self.bias.dtype else y + self.bias


class Concat:
    """Several linears of one input whose outputs are concatenated: Q, K and V (or gate and
    up) when their weights cannot share one matrix (a GGUF with V in other blocks than Q/K)."""

    def __init__(self, parts: list[Linear]) -> None:
        self.parts = parts
        self.out_features = sum(p.out_features for p in parts)
        self.in_features = parts[0].in_features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=-1)
