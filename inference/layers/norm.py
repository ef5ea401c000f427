"""RMSNorm, with the residual add fused in (vLLM's ``RMSNorm(x, residual)``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels import LayerOps


def rms_norm(x: torch.Tensor, doubled_weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of ``x`` ``[T, H]`` with weight ``w`` given as ``cat(w, w)``.

    Computed as LayerNorm of ``[x, -x]``: that has zero mean and variance ``mean(x**2)``,
    so its first half is exactly ``x / rms(x) * w``; torch's CPU LayerNorm kernel is
    about twice as fast as its RMSNorm kernel on a decode step's rows (measured).
    """
    h = x.shape[-1]
    return F.layer_norm(torch.cat((x, -x), dim=-1), (2 * h,), doubled_weight, None, eps)[..., :h]


class RMSNorm:
    """``x / rms(x) * (offset + w)``; Gemma's norms scale by ``1 + w`` (``offset=1``).

    ``norm(x, residual)`` adds ``x`` to ``residual`` first (in place with the native kernel)
    and returns ``(normed, residual)``, so a block hands its output to the next block's
    pre-norm without a separate add; ``norm(x)`` normalizes alone."""

    def __init__(self, weight: torch.Tensor, eps: float, dtype: torch.dtype, ops: LayerOps | None,
                 offset: float = 0.0) -> None:
        w = weight.float() + offset
        self.eps = eps
        self.weight = w.to(dtype)  # [H]
        self.doubled = w.repeat(2).to(dtype)  # [2H]: rms_norm's LayerNorm trick
        self.ops = ops if ops is not None and ops.supports(dtype) else None

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ops is not None:
            if residual is None:
                return self.ops.add_rms_norm(x, None, self.weight, self.eps), x
            return self.ops.add_rms_norm(residual, x, self.weight, self.eps), residual
        if residual is not None:
            x = residual + x
        return rms_norm(x, self.doubled, self.eps), x

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """Each head of ``x`` ``[T, heads, D]`` normalized over ``D`` (Qwen 3's and Gemma 3's QK norm)."""
        t, n, d = x.shape
        return rms_norm(x.reshape(t * n, d), self.doubled, self.eps).view(t, n, d)
