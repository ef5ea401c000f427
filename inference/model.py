"""A Llama-family decoder over a paged KV cache, written for few small ops per token.

A step's tokens from every scheduled sequence are flattened into one ``[T, H]`` batch,
so each weight is read once per step whatever mix of prompt chunks and decodes it holds
(as in vLLM). Only attention looks at sequences separately: single-token rows are
batched over the keys they gather from their blocks; prompt chunks attend one by one.
Weights come with Hugging Face Llama names; Q/K/V and gate/up are fused at load.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .kernels import DecodeAttention, LayerOps
from .kernels import Int4Linear as NativeInt4
from .quant import CandidateHead, DenseLinear, HybridLinear, make_linear

Linear = DenseLinear | HybridLinear | Any  # Any: a bitsandbytes module on CUDA


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

    @property
    def kv_bytes_per_token(self) -> int:
        """Per token, all layers, keys and values, per byte of the cache dtype."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim


@dataclass
class PrefillRow:
    """A chunk of several tokens of one sequence, attending to its own past and itself."""

    token_start: int  # range in the step's flattened tokens
    token_end: int
    context: list[tuple[int, int]]  # its keys as runs of consecutive cache slots (first, count)
    mask: torch.Tensor | None  # [L, C] bool for a chunk after a past, else causal over the keys...
    past: int = 0  # ...that follow the first ``past`` keys, which every query sees (CPU only)


@dataclass
class AttentionBatch:
    """Where each token of a step writes its key/value and what it reads (built by the runner).

    The first ``num_decode`` tokens are single-token rows (one per sequence); then come
    the prompt chunks in ``prefills``.
    """

    slot_mapping: torch.Tensor  # [T] flat cache position written by each token
    positions: torch.Tensor  # [T]
    num_decode: int
    decode_context: list[tuple[int, int]] | None  # the one decode row's keys as runs of slots
    # several decode rows: the cache slots of their keys, gathered once per layer, either
    # padded to the longest row ([Nd * C], with decode_mask [Nd, 1, 1, C] True where a row
    # has a key, None when no row is padded) or, where padding would waste much, ragged (one
    # row after another, sum(decode_lengths) slots), attended row by row
    decode_slots: torch.Tensor | None
    decode_num_context: int  # C
    decode_mask: torch.Tensor | None
    decode_lengths: list[int] | None  # ragged: each row's number of keys
    prefills: list[PrefillRow]
    logits_index: torch.Tensor | None  # [R] tokens whose logits are wanted (None: the last row)
    # with the native decode kernel (LlamaModel.decode_attention) the decode rows read their
    # keys in place instead: block tables [Nd, B] and key counts [Nd], int32 (the fields
    # above stay None)
    decode_tables: torch.Tensor | None = None
    decode_seq_lens: torch.Tensor | None = None
    block_size: int = 0


@dataclass
class LayerWeights:
    input_norm: torch.Tensor  # RMSNorm weights as cat(w, w): see rms_norm
    qkv: Linear
    o: Linear
    post_norm: torch.Tensor
    gate_up: Linear
    down: Linear


def rms_norm(x: torch.Tensor, doubled_weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of ``x`` ``[T, H]`` with weight ``w`` given as ``cat(w, w)``.

    Computed as LayerNorm of ``[x, -x]``: that has zero mean and variance ``mean(x**2)``,
    so its first half is exactly ``x / rms(x) * w``; torch's CPU LayerNorm kernel is
    about twice as fast as its RMSNorm kernel on a decode step's rows (measured).
    """
    h = x.shape[-1]
    return F.layer_norm(torch.cat((x, -x), dim=-1), (2 * h,), doubled_weight, None, eps)[..., :h]


def _read(cache_k: torch.Tensor, cache_v: torch.Tensor,
          runs: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[1, Hkv, C, D]`` of runs of slots: a (strided) view for one run."""
    if len(runs) == 1:
        s0, n = runs[0]
        keys, values = cache_k[s0 : s0 + n], cache_v[s0 : s0 + n]  # [C, Hkv, D]
    else:
        keys = torch.cat([cache_k[s0 : s0 + n] for s0, n in runs])
        values = torch.cat([cache_v[s0 : s0 + n] for s0, n in runs])
    return keys.transpose(0, 1).unsqueeze(0), values.transpose(0, 1).unsqueeze(0)


def _attend_after_past(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, past: int) -> torch.Tensor:
    """A prompt chunk ``q`` ``[1, Hq, L, D]`` after ``past`` earlier keys: attention to the past
    (no mask) and causal attention to its own keys, merged by their log-sum-exps. SDPA with
    the equivalent [L, past + L] mask computes every masked score as well: measured, a
    1,973-token chunk after a 32-token cached system prompt took 71 ms a layer masked, 42 split
    (the second turn of every chat, and every prompt that starts with the default system prompt)."""
    flash = torch._scaled_dot_product_flash_attention_for_cpu
    o_past, lse_past = flash(q, keys[:, :, :past], values[:, :, :past], 0.0, False)
    o_own, lse_own = flash(q, keys[:, :, past:], values[:, :, past:], 0.0, True)
    top = torch.maximum(lse_past, lse_own)
    w_past, w_own = torch.exp(lse_past - top), torch.exp(lse_own - top)  # [1, Hq, L]
    total = w_past + w_own
    merged = o_past.float() * (w_past / total)[..., None] + o_own.float() * (w_own / total)[..., None]
    return merged.to(q.dtype)


def _decode_rows(qd: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor,
                 batch: AttentionBatch) -> torch.Tensor:
    """Attention of several decode rows ``qd`` ``[Nd, Hkv, G, D]`` -> ``[Nd, Hkv, G, D]``.

    SDPA's CPU kernel reads the gathered keys in place as ``[Nd, Hkv, C, D]`` strided views.
    It is ATen's own kernel: a bf16 ``matmul`` here would go through oneDNN, which compiles and
    keeps a kernel for every new shape, and a decode batch's context width is new every step
    (measured: memory grew by hundreds of MB over a few minutes of traffic)."""
    assert batch.decode_slots is not None
    nd, hkv, _, d = qd.shape
    keys = cache_k.index_select(0, batch.decode_slots)  # [keys, Hkv, D]
    values = cache_v.index_select(0, batch.decode_slots)
    if batch.decode_lengths is not None:
        # ragged: each row reads only its own keys; measured 2-4x faster than padding when
        # rows' contexts differ a lot (a long chat beside new ones)
        outs, start = [], 0
        for i, n in enumerate(batch.decode_lengths):
            outs.append(F.scaled_dot_product_attention(
                qd[i : i + 1], keys[start : start + n].transpose(0, 1).unsqueeze(0),
                values[start : start + n].transpose(0, 1).unsqueeze(0)))
            start += n
        return torch.cat(outs)
    c = batch.decode_num_context
    keys, values = keys.view(nd, c, hkv, d).transpose(1, 2), values.view(nd, c, hkv, d).transpose(1, 2)
    return F.scaled_dot_product_attention(qd, keys, values, attn_mask=batch.decode_mask)


class LlamaModel:
    """Weights and the forward. Not an ``nn.Module``: no hooks, no autograd, a handful
    of plain tensors and callables, so per-op overhead stays small."""

    def __init__(self, args: LlamaArgs, embed: torch.Tensor, layers: list[LayerWeights], norm: torch.Tensor,
                 head: Linear, dtype: torch.dtype, device: str) -> None:
        self.args = args
        self.embed = embed  # [V, H]
        self.layers = layers
        self.norm = norm
        self.head = head
        self.dtype = dtype
        self.device = device
        self.cos, self.sin = self.rope_tables(args, args.max_position_embeddings, dtype, device)
        # set by the loader where the native CPU kernel is built for this dtype: decode rows
        # then attend through it (inference/kernels), else through SDPA
        self.decode_attention: DecodeAttention | None = None
        self.layer_ops: LayerOps | None = None  # likewise for norms, RoPE, cache writes, SiLU
        self._kv_views: tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    @staticmethod
    def rope_tables(args: LlamaArgs, length: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos`` and sign-folded ``sin`` ``[length, D]``: ``rope(x) = x*cos + roll(x, D/2)*sin``."""
        d = args.head_dim
        inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        freqs = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq  # [L, D/2]
        cos = torch.cat((freqs.cos(), freqs.cos()), dim=-1)
        sin = torch.cat((-freqs.sin(), freqs.sin()), dim=-1)
        return cos.to(device=device, dtype=dtype), sin.to(device=device, dtype=dtype)

    @classmethod
    def from_state_dict(cls, args: LlamaArgs, state: dict[str, torch.Tensor], dtype: torch.dtype, device: str,
                        linear_kind: str = "dense", head_kind: str = "dense",
                        native_int4: NativeInt4 | None = None) -> LlamaModel:
        """Build from a Hugging Face Llama ``state_dict`` (float32 or any float dtype);
        ``native_int4``: the int4 kernel built for this CPU, for the int4 layers it fits."""
        def w(name: str) -> torch.Tensor:
            return state[name].to(device=device, dtype=torch.float32)

        def lin(weight: torch.Tensor, kind: str) -> Linear:
            return make_linear(weight, kind, dtype, native_int4)

        layers = []
        for i in range(args.num_hidden_layers):
            p = f"model.layers.{i}."
            qkv = torch.cat([w(p + "self_attn.q_proj.weight"), w(p + "self_attn.k_proj.weight"),
                             w(p + "self_attn.v_proj.weight")])
            gate_up = torch.cat([w(p + "mlp.gate_proj.weight"), w(p + "mlp.up_proj.weight")])
            layers.append(LayerWeights(
                input_norm=w(p + "input_layernorm.weight").repeat(2).to(dtype),
                qkv=lin(qkv, linear_kind),
                o=lin(w(p + "self_attn.o_proj.weight"), linear_kind),
                post_norm=w(p + "post_attention_layernorm.weight").repeat(2).to(dtype),
                gate_up=lin(gate_up, linear_kind),
                down=lin(w(p + "mlp.down_proj.weight"), linear_kind),
            ))
        embed = w("model.embed_tokens.weight")
        head_weight = embed if args.tie_word_embeddings or "lm_head.weight" not in state else w("lm_head.weight")
        head: Linear = (CandidateHead(head_weight, dtype, native=native_int4) if head_kind == "int4+int8"
                        else lin(head_weight, head_kind))
        embed_c = embed.to(dtype)
        if isinstance(head, DenseLinear) and head_weight is embed:
            head = DenseLinear(embed_c)  # tied: one copy
        return cls(args, embed_c, layers, w("model.norm.weight").repeat(2).to(dtype), head, dtype, device)

    def linears(self) -> list[Linear]:
        out: list[Linear] = [self.head.exact if isinstance(self.head, CandidateHead) else self.head]
        for layer in self.layers:
            out += [layer.qkv, layer.o, layer.gate_up, layer.down]
        return out

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, batch: AttentionBatch, kv: torch.Tensor) -> torch.Tensor:
        """Compute ``input_ids`` ``[T]``; write their keys/values into ``kv``
        ``[L, 2, num_slots, Hkv, D]``; return logits ``[R, V]`` (float32) of the tokens
        in ``batch.logits_index``."""
        a = self.args
        t = input_ids.shape[0]
        hq, hkv, d = a.num_attention_heads, a.num_key_value_heads, a.head_dim
        group = hq // hkv
        eps = a.rms_norm_eps
        ops = self.layer_ops
        if ops is None:
            cos = self.cos[batch.positions][:, None]  # [T, 1, D]
            sin = self.sin[batch.positions][:, None]
        half = d // 2
        slots = batch.slot_mapping
        nd = batch.num_decode
        if self._kv_views is None or self._kv_views[0] is not kv:  # each layer's [S, Hkv, D] views, once
            self._kv_views = (kv, [(kv[i, 0], kv[i, 1]) for i in range(len(self.layers))])
        views = self._kv_views[1]
        x = F.embedding(input_ids, self.embed)  # [T, H]
        if ops is not None:
            h = ops.add_rms_norm(x, None, self.layers[0].input_norm, eps)
        for i, layer in enumerate(self.layers):
            cache_k, cache_v = views[i]
            if ops is None:
                h = rms_norm(x, layer.input_norm, eps)
            qkv = layer.qkv(h)  # [T, (Hq + 2 Hkv) D]
            if ops is not None:
                ops.rope_store(qkv, batch.positions, self.cos, self.sin, (hq, hkv, d), cache_k, cache_v, slots)
                q = qkv[:, : hq * d].view(t, hq, d)
            else:
                qk = qkv[:, : (hq + hkv) * d].view(t, hq + hkv, d)
                qk = torch.addcmul(qk * cos, torch.roll(qk, half, dims=-1), sin)  # RoPE on q and k at once
                q = qk[:, :hq]  # [T, Hq, D]
                cache_k.index_copy_(0, slots, qk[:, hq:])
                cache_v.index_copy_(0, slots, qkv[:, (hq + hkv) * d :].view(t, hkv, d))
            outs = []
            if nd and batch.decode_tables is not None:
                assert self.decode_attention is not None and batch.decode_seq_lens is not None
                o = self.decode_attention(q[:nd], cache_k, cache_v, batch.decode_tables, batch.decode_seq_lens,
                                          batch.block_size, q.new_empty((nd, hq, d)))
                outs.append(o.view(nd, hq * d))
            elif nd:
                # the Hq/Hkv query heads sharing a kv head become rows of one query block
                qd = q[:nd].reshape(nd, hkv, group, d)  # [Nd, Hkv, G, D]
                if batch.decode_context is not None:  # one row: views of its runs of slots
                    keys, values = _read(cache_k, cache_v, batch.decode_context)  # [1, Hkv, C, D]
                    o = F.scaled_dot_product_attention(qd, keys, values)  # [1, Hkv, G, D]
                else:
                    o = _decode_rows(qd, cache_k, cache_v, batch)
                outs.append(o.reshape(nd, hq * d))
            for row in batch.prefills:
                qp = q[row.token_start : row.token_end].transpose(0, 1).unsqueeze(0)  # [1, Hq, L, D]
                keys, values = _read(cache_k, cache_v, row.context)  # [1, Hkv, C, D]
                if row.past:
                    o = _attend_after_past(qp, keys, values, row.past)
                else:
                    o = F.scaled_dot_product_attention(
                        qp, keys, values, attn_mask=row.mask, is_causal=row.mask is None, enable_gqa=True,
                    )  # [1, Hq, L, D]
                outs.append(o[0].transpose(0, 1).reshape(-1, hq * d))
            attn = outs[0] if len(outs) == 1 else torch.cat(outs)
            if ops is not None:
                h = ops.add_rms_norm(x, layer.o(attn), layer.post_norm, eps)  # x += o(attn) in place
                down = layer.down(ops.silu_mul(layer.gate_up(h)))
                if i + 1 < len(self.layers):
                    h = ops.add_rms_norm(x, down, self.layers[i + 1].input_norm, eps)
                else:
                    x = x + down
            else:
                x = x + layer.o(attn)
                h = rms_norm(x, layer.post_norm, eps)
                gu = layer.gate_up(h)
                inter = gu.shape[-1] // 2
                x = x + layer.down(F.silu(gu[:, :inter]) * gu[:, inter:])
        if batch.logits_index is not None and batch.logits_index.numel() == 0:  # a chunk mid-prompt
            return x.new_empty((0, a.vocab_size), dtype=torch.float32)
        last = x[batch.logits_index] if batch.logits_index is not None else x[-1:]
        return self.head(rms_norm(last, self.norm, eps)).float()  # [R, V]
