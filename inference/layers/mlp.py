"""Gated MLPs: ``down(act(gate(x)) * up(x))`` with SiLU (Llama, Qwen, Mistral, Phi 3) or GELU
with the tanh approximation (Gemma)."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..kernels import LayerOps
from .linear import Linear


def _silu_mul(gu: torch.Tensor) -> torch.Tensor:
    inter = gu.shape[-1] // 2
    return F.silu(gu[:, :inter]) * gu[:, inter:]


def _gelu_tanh_mul(gu: torch.Tensor) -> torch.Tensor:
    inter = gu.shape[-1] // 2
    return F.gelu(gu[:, :inter], approximate="tanh") * gu[:, inter:]


ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}


class GatedMLP:
    def __init__(self, gate_up: Linear, down: Linear, activation: str, ops: LayerOps | None,
                 dtype: torch.dtype) -> None:
        """``gate_up`` computes ``[T, 2 I]`` (gate first); ``activation`` a transformers
        ``hidden_act`` name; raises ValueError for one that is not gated SiLU or GELU-tanh."""
        kind = ACTIVATIONS.get(activation)
        if kind is None:
            raise ValueError(f"unsupported activation {activation!r}")
        self.gate_up, self.down = gate_up, down
        native = ops is not None and ops.supports(dtype)
        self.act: Callable[[torch.Tensor], torch.Tensor]
        if kind == "silu":
            self.act = ops.silu_mul if native and ops is not None else _silu_mul
        else:
            self.act = ops.gelu_tanh_mul if native and ops is not None else _gelu_tanh_mul

    def __call__(self, h: torch.Tensor) -> torch.Tensor:  # [T, H] -> [T, H]
        return self.down(self.act(self.gate_up(h)))
