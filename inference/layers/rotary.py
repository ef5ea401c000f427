"""Rotary position embeddings, with the cache writes of the same step.

The inverse frequencies come from transformers' own functions for every static rope type
(``default``, ``linear``, ``llama3``, ``yarn``), so a model's positions mean what its config
says; types that change with the sequence length (``dynamic``, ``longrope``) are refused."""
from __future__ import annotations

from typing import Any

import torch

from ..kernels import LayerOps
from .attention import AttentionBatch

STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def rope_parameters(config: Any, layer_type: str | None = None) -> dict[str, Any]:
    """The rope parameters of ``config`` for layers of ``layer_type`` (Gemma 3 keys them by type)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if layer_type is not None and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    return dict(params)


def inverse_frequencies(config: Any, head_dim: int, layer_type: str | None = None) -> tuple[torch.Tensor, float]:
    """``(inv_freq [rot/2] float64, attention_scaling)``; raises ValueError for a rope type
    that changes with the sequence length."""
    params = rope_parameters(config, layer_type)
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type not in STATIC_ROPE_TYPES:
        raise ValueError(f"unsupported rope type {rope_type!r} (served: {', '.join(STATIC_ROPE_TYPES)})")
    if rope_type == "default":
        base = float(params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)
        factor = float(params.get("partial_rotary_factor") or getattr(config, "partial_rotary_factor", 1.0) or 1.0)
        dim = int(head_dim * factor)
        return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    kwargs = {"layer_type": layer_type} if layer_type is not None else {}
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, None, **kwargs)
    return inv_freq.double(), float(scaling)


class Rotary:
    """Rotates the q and k heads of a step's fused ``qkv`` by their positions and writes k and v
    to the cache: one native pass where the kernel is built and every dimension rotates,
    else torch's ops (also for a partial rotary dimension, as Phi's)."""

    def __init__(self, inv_freq: torch.Tensor, scaling: float, head_dim: int, max_positions: int,
                 dtype: torch.dtype, device: str, ops: LayerOps | None) -> None:
        freqs = torch.arange(max_positions, dtype=torch.float64)[:, None] * inv_freq  # [L, rot/2]
        cos = torch.cat((freqs.cos(), freqs.cos()), dim=-1) * scaling
        sin = torch.cat((-freqs.sin(), freqs.sin()), dim=-1) * scaling  # sign-folded: see rope()
        self.cos, self.sin = cos.to(device=device, dtype=dtype), sin.to(device=device, dtype=dtype)  # [L, rot]
        self.rot = 2 * inv_freq.numel()
        self.head_dim = head_dim
        self.ops = ops if ops is not None and ops.supports(dtype) and self.rot == head_dim else None

    def tables(self, batch: AttentionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos``/``sin`` ``[T, 1, rot]`` at the step's positions, gathered once per step."""
        key = ("rope", id(self))
        if key not in batch.memo:
            batch.memo[key] = (self.cos[batch.positions][:, None], self.sin[batch.positions][:, None])
        return batch.memo[key]  # type: ignore[no-any-return]

    def __call__(self, qkv: torch.Tensor, batch: AttentionBatch, heads: tuple[int, int, int],
                 cache_k: torch.Tensor, cache_v: torch.Tensor) -> torch.Tensor:
        """``qkv`` ``[T, (Hq + 2 Hkv) D]`` -> the rotated queries ``[T, Hq, D]`` (a view of it);
        the rotated keys and the values are written at ``batch.slot_mapping``."""
        hq, hkv, d = heads
        t = qkv.shape[0]
        if self.ops is not None:
            self.ops.rope_store(qkv, batch.positions, self.cos, self.sin, heads, cache_k, cache_v, batch.slot_mapping)
            return qkv[:, : hq * d].view(t, hq, d)
        cos, sin = self.tables(batch)
        qk = qkv[:, : (hq + hkv) * d].view(t, hq + hkv, d)
        if self.rot == d:
            qk = torch.addcmul(qk * cos, torch.roll(qk, d // 2, dims=-1), sin)
        else:
            part = qk[..., : self.rot]
            qk = torch.cat((torch.addcmul(part * cos, torch.roll(part, self.rot // 2, dims=-1), sin),
                            qk[..., self.rot :]), dim=-1)
        cache_k.index_copy_(0, batch.slot_mapping, qk[:, hq:])
        cache_v.index_copy_(0, batch.slot_mapping, qkv[:, (hq + hkv) * d :].view(t, hkv, d))
        return qk[:, :hq]
