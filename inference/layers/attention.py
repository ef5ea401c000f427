"""Self-attention over the paged KV cache, and the step's attention metadata.

A step's tokens from every scheduled sequence are flattened into one ``[T, H]`` batch: the
first ``num_decode`` are single-token rows (one per sequence), then come prompt chunks. Decode
rows read their keys through their block tables (the native kernel) or gathered (SDPA);
prompt chunks attend one by one. A sliding-window layer reads only each query's last
``window`` keys; Gemma 2's soft-capped scores go through an explicit softmax (SDPA has no cap).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..kernels import DecodeAttention

if TYPE_CHECKING:
    from .linear import Linear
    from .norm import RMSNorm
    from .rotary import Rotary


@dataclass
class PrefillRow:
    """A chunk of several tokens of one sequence, attending to its own past and itself."""

    token_start: int  # range in the step's flattened tokens
    token_end: int
    context: list[tuple[int, int]]  # its keys as runs of consecutive cache slots (first, count)
    mask: torch.Tensor | None  # [L, C] bool for a chunk after a past, else causal over the keys...
    past: int = 0  # ...that follow the first ``past`` keys, which every query sees (CPU only)
    start: int = 0  # position of the chunk's first token (its keys are positions 0..start+L-1)
    memo: dict[Any, Any] = field(default_factory=dict)  # masks its layers share


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
    # with the native decode kernel the decode rows read their keys in place instead: block
    # tables [Nd, B] and key counts [Nd], int32 (the fields above stay None)
    decode_tables: torch.Tensor | None = None
    decode_seq_lens: torch.Tensor | None = None
    block_size: int = 0
    decode_key_counts: list[int] = field(default_factory=list)  # each decode row's keys, any path
    memo: dict[Any, Any] = field(default_factory=dict)  # per-step values parts compute once (rope rows, masks)


def read_runs(cache_k: torch.Tensor, cache_v: torch.Tensor,
              runs: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[1, Hkv, C, D]`` of runs of slots: a (strided) view for one run."""
    if len(runs) == 1:
        s0, n = runs[0]
        keys, values = cache_k[s0 : s0 + n], cache_v[s0 : s0 + n]  # [C, Hkv, D]
    else:
        keys = torch.cat([cache_k[s0 : s0 + n] for s0, n in runs])
        values = torch.cat([cache_v[s0 : s0 + n] for s0, n in runs])
    return keys.transpose(0, 1).unsqueeze(0), values.transpose(0, 1).unsqueeze(0)


def attend_after_past(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, past: int,
                      scale: float | None) -> torch.Tensor:
    """A prompt chunk ``q`` ``[1, Hq, L, D]`` after ``past`` earlier keys: attention to the past
    (no mask) and causal attention to its own keys, merged by their log-sum-exps. SDPA with
    the equivalent [L, past + L] mask computes every masked score as well: measured, a
    1,973-token chunk after a 32-token cached system prompt took 71 ms a layer masked, 42 split."""
    flash = torch._scaled_dot_product_flash_attention_for_cpu
    o_past, lse_past = flash(q, keys[:, :, :past], values[:, :, :past], 0.0, False, scale=scale)
    o_own, lse_own = flash(q, keys[:, :, past:], values[:, :, past:], 0.0, True, scale=scale)
    top = torch.maximum(lse_past, lse_own)
    w_past, w_own = torch.exp(lse_past - top), torch.exp(lse_own - top)  # [1, Hq, L]
    total = w_past + w_own
    merged = o_past.float() * (w_past / total)[..., None] + o_own.float() * (w_own / total)[..., None]
    return merged.to(q.dtype)


def eager(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
          scale: float, softcap: float) -> torch.Tensor:
    """Attention written out, in float32: ``q`` ``[N, Hq, L, D]``, keys/values ``[N, Hkv, C, D]``,
    ``mask`` broadcastable to ``[N, Hq, L, C]`` (True: visible). For soft-capped scores."""
    group = q.shape[1] // keys.shape[1]
    if group > 1:
        keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
    scores = torch.matmul(q.float(), keys.float().transpose(-1, -2)) * scale  # [N, Hq, L, C]
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), values.float()).to(q.dtype)


def chunk_mask(start: int, length: int, window: int, device: str) -> torch.Tensor:
    """``[L, start + L]``: query ``i`` (position ``start + i``) sees key ``j`` when
    ``j <= start + i`` and, with a window, ``j > start + i - window``."""
    pos = torch.arange(start, start + length)[:, None]
    keys = torch.arange(start + length)[None, :]
    visible = keys <= pos
    if window:
        visible &= keys > pos - window
    return visible.to(device)


class Attention:
    """One layer's attention: fused QKV projection, optional QK norm, rotary + cache write,
    attention over the cache (sliding window, soft-capping, a custom scale), output projection."""

    def __init__(self, qkv: Linear, o: Linear, heads: tuple[int, int, int], rotary: Rotary, *,
                 scale: float | None = None, window: int = 0, softcap: float = 0.0,
                 q_norm: RMSNorm | None = None, k_norm: RMSNorm | None = None,
                 decode_kernel: DecodeAttention | None = None) -> None:
        self.qkv, self.o, self.heads, self.rotary = qkv, o, heads, rotary
        self.scale = scale if scale is not None else heads[2] ** -0.5
        self.window, self.softcap = window or 0, float(softcap or 0.0)
        self.q_norm, self.k_norm = q_norm, k_norm
        self.decode_kernel = decode_kernel

    def __call__(self, h: torch.Tensor, batch: AttentionBatch, cache_k: torch.Tensor,
                 cache_v: torch.Tensor) -> torch.Tensor:  # [T, H] -> [T, H]
        hq, hkv, d = self.heads
        t = h.shape[0]
        qkv = self.qkv(h)  # [T, (Hq + 2 Hkv) D]
        if self.q_norm is not None and self.k_norm is not None:
            qkv = qkv.contiguous()
            heads = qkv.view(t, hq + 2 * hkv, d)
            heads[:, :hq] = self.q_norm.heads(heads[:, :hq])
            heads[:, hq : hq + hkv] = self.k_norm.heads(heads[:, hq : hq + hkv])
        q = self.rotary(qkv, batch, self.heads, cache_k, cache_v)  # [T, Hq, D]
        outs = []
        nd = batch.num_decode
        if nd:
            outs.append(self._decode(q[:nd], batch, cache_k, cache_v).reshape(nd, hq * d))
        for row in batch.prefills:
            outs.append(self._prefill(q, row, cache_k, cache_v).reshape(-1, hq * d))
        return self.o(outs[0] if len(outs) == 1 else torch.cat(outs))

    def _decode(self, q: torch.Tensor, batch: AttentionBatch, cache_k: torch.Tensor,
                cache_v: torch.Tensor) -> torch.Tensor:
        """Single-token rows ``q`` ``[Nd, Hq, D]`` -> ``[Nd, Hq, D]``."""
        nd = q.shape[0]
        hq, hkv, d = self.heads
        if batch.decode_tables is not None and self.decode_kernel is not None:
            assert batch.decode_seq_lens is not None
            return self.decode_kernel(q, cache_k, cache_v, batch.decode_tables, batch.decode_seq_lens,
                                      batch.block_size, q.new_empty((nd, hq, d)), self.scale, self.window,
                                      self.softcap)
        qd = q.reshape(nd, hkv, hq // hkv, d)  # [Nd, Hkv, G, D]: the query heads of a kv head as rows
        w = self.window
        if batch.decode_context is not None:  # one row: views of its runs of slots
            keys, values = read_runs(cache_k, cache_v, batch.decode_context)  # [1, Hkv, C, D]
            if w and keys.shape[2] > w:
                keys, values = keys[:, :, -w:], values[:, :, -w:]
            return self._sdpa(qd, keys, values, None)
        assert batch.decode_slots is not None
        keys = cache_k.index_select(0, batch.decode_slots)  # [keys, Hkv, D]
        values = cache_v.index_select(0, batch.decode_slots)
        if batch.decode_lengths is not None:
            # ragged: each row reads only its own keys; measured 2-4x faster than padding when
            # rows' contexts differ a lot (a long chat beside new ones)
            outs, start = [], 0
            for i, n in enumerate(batch.decode_lengths):
                first = start + max(0, n - w) if w else start
                outs.append(self._sdpa(qd[i : i + 1], keys[first : start + n].transpose(0, 1).unsqueeze(0),
                                       values[first : start + n].transpose(0, 1).unsqueeze(0), None))
                start += n
            return torch.cat(outs)
        c = batch.decode_num_context
        keys, values = keys.view(nd, c, hkv, d).transpose(1, 2), values.view(nd, c, hkv, d).transpose(1, 2)
        mask = batch.decode_mask
        if w and c > w:
            key = ("decode_window", w)
            if key not in batch.memo:
                counts = torch.tensor(batch.decode_key_counts)[:, None]
                cols = torch.arange(c)[None, :]
                batch.memo[key] = ((cols < counts) & (cols >= counts - w))[:, None, None, :].to(q.device)
            mask = batch.memo[key]
        return self._sdpa(qd, keys, values, mask)

    def _sdpa(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
              mask: torch.Tensor | None) -> torch.Tensor:
        """SDPA's CPU kernel (ATen's own: a bf16 ``matmul`` would compile a oneDNN kernel for every
        new context width), or the eager path where scores are soft-capped."""
        if self.softcap:
            return eager(q, keys, values, mask, self.scale, self.softcap)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale)

    def _prefill(self, q: torch.Tensor, row: PrefillRow, cache_k: torch.Tensor,
                 cache_v: torch.Tensor) -> torch.Tensor:
        """A prompt chunk's queries -> ``[L, Hq, D]``."""
        qp = q[row.token_start : row.token_end].transpose(0, 1).unsqueeze(0)  # [1, Hq, L, D]
        keys, values = read_runs(cache_k, cache_v, row.context)  # [1, Hkv, C, D]
        length = row.token_end - row.token_start
        windowed = self.window and row.start + length > self.window
        if windowed or self.softcap:
            w = self.window if windowed else 0
            if w not in row.memo:
                row.memo[w] = chunk_mask(row.start, length, w, str(q.device))
            mask = row.memo[w]
            if self.softcap:
                o = eager(qp, keys, values, mask, self.scale, self.softcap)
            else:
                o = F.scaled_dot_product_attention(qp, keys, values, attn_mask=mask, scale=self.scale,
                                                   enable_gqa=True)
        elif row.past:
            o = attend_after_past(qp, keys, values, row.past, self.scale)
        else:
            o = F.scaled_dot_product_attention(qp, keys, values, attn_mask=row.mask, is_causal=row.mask is None,
                                               scale=self.scale, enable_gqa=True)  # [1, Hq, L, D]
        return o[0].transpose(0, 1)
