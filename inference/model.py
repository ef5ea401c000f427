"""A Llama-family decoder whose KV cache lives in per-slot rows (continuous batching).

Every forward takes a block of contiguous cache slots ``[slot0, slot0 + N)``, the new
tokens of each row right-padded to ``S``, and each row's start position. Rows may sit at
different positions, which is what lets requests join and leave a running batch.
Weights use Hugging Face Llama names, so a ``state_dict`` from transformers loads as is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LlamaArgs:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool

    @classmethod
    def from_hf_config(cls, config: object) -> LlamaArgs:
        """Build from a transformers ``LlamaConfig`` (or compatible)."""
        def get(name: str, default: Any = None) -> Any:
            return getattr(config, name, default)

        model_type = get("model_type")
        if model_type != "llama" or get("attention_bias", False) or get("mlp_bias", False):
            raise ValueError(f"unsupported architecture {model_type!r} (Llama without biases only)")
        rope = get("rope_parameters") or get("rope_scaling") or {}
        rope_type = (rope or {}).get("rope_type", "default")
        if rope_type not in ("default", None):
            raise ValueError(f"unsupported rope type {rope_type!r}")
        theta = (rope or {}).get("rope_theta") or get("rope_theta", 10000.0)
        heads = get("num_attention_heads")
        return cls(
            vocab_size=get("vocab_size"),
            hidden_size=get("hidden_size"),
            intermediate_size=get("intermediate_size"),
            num_hidden_layers=get("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=get("num_key_value_heads") or heads,
            head_dim=get("head_dim") or get("hidden_size") // heads,
            rms_norm_eps=get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            max_position_embeddings=get("max_position_embeddings", 4096),
            tie_word_embeddings=bool(get("tie_word_embeddings", False)),
        )


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class Attention(nn.Module):
    q_proj: nn.Module
    k_proj: nn.Module
    v_proj: nn.Module
    o_proj: nn.Module

    def __init__(self, a: LlamaArgs) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            a.num_attention_heads,
            a.num_key_value_heads,
            a.head_dim,
        )
        self.q_proj = nn.Linear(a.hidden_size, a.num_attention_heads * a.head_dim, bias=False)
        self.k_proj = nn.Linear(a.hidden_size, a.num_key_value_heads * a.head_dim, bias=False)
        self.v_proj = nn.Linear(a.hidden_size, a.num_key_value_heads * a.head_dim, bias=False)
        self.o_proj = nn.Linear(a.num_attention_heads * a.head_dim, a.hidden_size, bias=False)


class MLP(nn.Module):
    def __init__(self, a: LlamaArgs) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(a.hidden_size, a.intermediate_size, bias=False)
        self.up_proj = nn.Linear(a.hidden_size, a.intermediate_size, bias=False)
        self.down_proj = nn.Linear(a.intermediate_size, a.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, a: LlamaArgs) -> None:
        super().__init__()
        self.self_attn = Attention(a)
        self.mlp = MLP(a)
        self.input_layernorm = RMSNorm(a.hidden_size, a.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(a.hidden_size, a.rms_norm_eps)


class Backbone(nn.Module):
    def __init__(self, a: LlamaArgs) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab_size, a.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(a) for _ in range(a.num_hidden_layers))
        self.norm = RMSNorm(a.hidden_size, a.rms_norm_eps)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class LlamaForCausalLM(nn.Module):
    """Llama decoder with an external slot-indexed KV cache (see ``KVCache``)."""

    inv_freq: torch.Tensor

    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.args = args
        self.model = Backbone(args)
        self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)
        self.register_buffer("inv_freq", self.rope_frequencies(args), persistent=False)

    @staticmethod
    def rope_frequencies(args: LlamaArgs) -> torch.Tensor:
        """RoPE inverse frequencies ``[D/2]`` (not in checkpoints: rebuilt after loading)."""
        return 1.0 / (args.rope_theta ** (torch.arange(0, args.head_dim, 2, dtype=torch.float32) / args.head_dim))

    def tie_weights(self) -> None:
        if self.args.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[..., None] * self.inv_freq  # [N, S, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [N, S, D]
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]  # [N, 1, S, D]

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,  # [N, S] right-padded
        start_pos: torch.Tensor,  # [N] position of input_ids[:, 0]
        slots: torch.Tensor,  # [N] cache rows, ascending
        cache: KVCache,
        logits_index: torch.Tensor,  # [N] index in S whose logits are wanted
        contiguous: bool = False,  # slots form one range: attention reads a view
        num_keys: int | None = None,  # max(start_pos) + S, when the caller knows it
        slot0: int | None = None,  # slots[0], when the caller knows it
    ) -> torch.Tensor:
        """Run N rows of the cache; return logits ``[N, V]`` (float32)."""
        n, s = input_ids.shape
        a = self.args
        positions = start_pos[:, None] + torch.arange(s, device=input_ids.device)  # [N, S]
        if num_keys is None:
            num_keys = int(start_pos.max().item()) + s
        cache.ensure_length(num_keys)
        x = self.model.embed_tokens(input_ids)  # [N, S, H]
        cos, sin = self._rope(positions, x.dtype)
        key_idx = torch.arange(num_keys, device=x.device)
        mask = (key_idx[None, None, :] <= positions[:, :, None])[:, None]  # [N, 1, S, T]
        rows = slots[:, None]  # [N, 1]
        if slot0 is None:
            slot0 = int(slots[0].item())
        for i, module in enumerate(self.model.layers):
            layer = cast(DecoderLayer, module)
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(n, s, a.num_attention_heads, a.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(n, s, a.num_key_value_heads, a.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(n, s, a.num_key_value_heads, a.head_dim)  # [N, S, Hkv, D]
            q = q * cos + _rotate_half(q) * sin  # [N, Hq, S, D]
            k = k * cos + _rotate_half(k) * sin  # [N, Hkv, S, D]
            k_cache, v_cache = cache.k[i], cache.v[i]  # [B, Hkv, T, D]
            k_cache[rows, :, positions] = k.transpose(1, 2).to(k_cache.dtype)
            v_cache[rows, :, positions] = v.to(v_cache.dtype)
            if contiguous:
                keys = k_cache[slot0 : slot0 + n, :, :num_keys]  # [N, Hkv, T, D] (a view)
                values = v_cache[slot0 : slot0 + n, :, :num_keys]
            else:
                keys = k_cache[:, :, :num_keys].index_select(0, slots)
                values = v_cache[:, :, :num_keys].index_select(0, slots)
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
            x = x + attn.o_proj(o.transpose(1, 2).reshape(n, s, a.num_attention_heads * a.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        last = x[torch.arange(n, device=x.device), logits_index]  # [N, H]
        return self.lm_head(self.model.norm(last)).float()  # [N, V]


class KVCache:
    """Per-layer key/value tensors ``[max_slots, Hkv, T, D]``; T grows on demand.

    Slots are rows; the runner keeps active rows contiguous from 0 so attention reads
    a view, never a gathered copy.
    """

    def __init__(self, args: LlamaArgs, max_slots: int, dtype: torch.dtype, device: str,
                 initial_length: int = 256, max_length: int | None = None) -> None:
        self.args, self.max_slots, self.dtype, self.device = args, max_slots, dtype, device
        self.max_length = max_length or args.max_position_embeddings
        self.length = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self._allocate(min(initial_length, self.max_length))

    # The forward runs under inference_mode, so the cache tensors are inference tensors;
    # every write to them, outside the forward too, must run in inference mode as well.
    @torch.inference_mode()
    def _allocate(self, length: int) -> None:
        a = self.args
        shape = (self.max_slots, a.num_key_value_heads, length, a.head_dim)
        new_k = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(a.num_hidden_layers)]
        new_v = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(a.num_hidden_layers)]
        for old, new in ((self.k, new_k), (self.v, new_v)):
            for o, nw in zip(old, new):
                nw[:, :, : self.length] = o
        self.k, self.v, self.length = new_k, new_v, length

    def ensure_length(self, length: int) -> None:
        """Grow the time dimension (doubling) so positions ``< length`` fit."""
        if length <= self.length:
            return
        new_length = self.length
        while new_length < length:
            new_length *= 2
        self._allocate(new_length)

    @torch.inference_mode()
    def move_slot(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``src`` into ``dst``."""
        for t in (*self.k, *self.v):
            t[dst, :, :length] = t[src, :, :length]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))
