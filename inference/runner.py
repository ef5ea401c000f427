"""Owns the tensors: the model and the paged KV cache. Applies what the scheduler decided.

The cache is one tensor ``[L, 2, num_blocks * block_size, Hkv, D]``, allocated (and
touched) once when the engine starts, so memory is reserved up front and never grows
with traffic. The runner turns each scheduled sequence's block table into flat cache
positions: where its new tokens write, and which keys its rows read.
"""
from __future__ import annotations

import logging

import torch

from .layers import AttentionBatch, PrefillRow
from .models import DecoderModel
from .models.transformers_backend import TransformersModel
from .scheduler import ScheduledSeq, SchedulerOutput

logger = logging.getLogger(__name__)
# Decode rows attend padded to the longest row (one batched matmul) unless the padding would be
# over this share of the real keys and the longest row is past this many keys; then row by row.
# Measured on 2 cores, 16 rows: contexts 20-80 padded 0.26 ms/layer, ragged 0.33; 200-1500
# padded 2.8, ragged 2.3; 100-3000 padded 5.5, ragged 4.4.
RAGGED_PADDING = 1.3
RAGGED_MIN_CONTEXT = 256
# A prompt chunk after earlier keys attends in two parts (model._attend_after_past) from this
# many tokens up, on a CPU; shorter ones use a mask. Measured per layer on 2 cores: 1,973 after
# 32 masked 71 ms, split 42; 512 after 1,500 19 vs 18; 300 after 500 4.4 vs 4.5; 16 after 2,000
# 0.8 vs 0.9.
SPLIT_PAST_MIN_CHUNK = 64


class ModelRunner:
    def __init__(self, model: DecoderModel | TransformersModel, num_blocks: int, block_size: int,
                 cache_dtype: torch.dtype) -> None:
        self.model = model
        self.device = model.device
        self.block_size = block_size
        a = model.args
        shape = (a.num_hidden_layers, 2, num_blocks * block_size, a.num_key_value_heads, a.head_dim)
        if isinstance(model, TransformersModel):  # transformers' own cache instead
            shape = (0, 0, 0, 0, 0)
        with torch.inference_mode():
            self.kv = torch.zeros(shape, dtype=cache_dtype, device=self.device)

    @property
    def kv_cache_bytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    def _slots(self, block_table: list[int], start: int, end: int) -> list[int]:
        bs = self.block_size
        return [block_table[p // bs] * bs + p % bs for p in range(start, end)]

    def _runs(self, block_table: list[int], num_tokens: int) -> list[tuple[int, int]]:
        """Positions ``< num_tokens`` as runs of consecutive cache slots ``(first, count)``.

        A sequence usually sits in a few runs (a cached system prompt, then its own
        blocks), so a row's keys are read as views or one concatenation of views,
        cheaper than gathering slot by slot."""
        bs = self.block_size
        nb = -(-num_tokens // bs)
        runs: list[tuple[int, int]] = []
        start = prev = block_table[0]
        for block in block_table[1:nb]:
            if block != prev + 1:
                runs.append((start * bs, (prev - start + 1) * bs))
                start = block
            prev = block
        runs.append((start * bs, (prev - start + 1) * bs))
        excess = nb * bs - num_tokens  # the last block is partly filled
        first, count = runs[-1]
        runs[-1] = (first, count - excess)
        return runs

    def _context_slots(self, rows: list[ScheduledSeq], width: int) -> torch.Tensor:
        """Cache positions ``[len(rows), width]`` (on the CPU) of each row's keys, padded
        with slot 0 (block 0 is never handed out)."""
        bs = self.block_size
        nb = -(-width // bs)
        tables = torch.tensor([(r.seq.block_table + [0] * nb)[:nb] for r in rows], dtype=torch.long)
        return (tables[:, :, None] * bs + torch.arange(bs)).view(len(rows), nb * bs)[:, :width]

    def execute(self, out: SchedulerOutput) -> tuple[list[ScheduledSeq], torch.Tensor]:
        """Run one step. Returns the rows that reached their last token (in order) and
        their logits ``[R, V]``."""
        decodes = [s for s in out.scheduled if s.num_tokens == 1]
        prefills = [s for s in out.scheduled if s.num_tokens > 1]
        ordered = decodes + prefills
        if isinstance(self.model, TransformersModel):
            last = [s for s in ordered if s.is_last]
            per_row = self.model.forward_scheduled(last)
            return last, (torch.stack(per_row) if per_row else torch.empty(0, self.model.args.vocab_size))
        ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        for s in ordered:
            ids += s.seq.all_token_ids[s.start : s.end]
            positions += range(s.start, s.end)
            slot_mapping += self._slots(s.seq.block_table, s.start, s.end)
        dev = self.device
        decode_context = decode_slots = decode_mask = decode_lengths = None
        decode_tables = decode_seq_lens = None
        width = 0
        if decodes and self.model.decode_attention is not None:
            nb = -(-max(s.end for s in decodes) // self.block_size)
            decode_tables = torch.tensor([(s.seq.block_table + [0] * nb)[:nb] for s in decodes], dtype=torch.int32)
            decode_seq_lens = torch.tensor([s.end for s in decodes], dtype=torch.int32)
        elif decodes:
            width = max(s.end for s in decodes)
            lengths = [s.end for s in decodes]
            if len(decodes) == 1:
                decode_context = self._runs(decodes[0].seq.block_table, width)
            else:
                slots = self._context_slots(decodes, width)
                keep = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]  # [Nd, C]
                if width > RAGGED_MIN_CONTEXT and len(decodes) * width > RAGGED_PADDING * sum(lengths):
                    decode_lengths = lengths
                    decode_slots = slots[keep].to(dev)  # each row's own keys, one row after another
                else:
                    decode_slots = slots.reshape(-1).to(dev)
                    if min(lengths) != width:
                        decode_mask = keep[:, None, None, :].to(dev)
        rows: list[PrefillRow] = []
        cursor = len(decodes)
        for s in prefills:
            n = s.num_tokens
            context = self._runs(s.seq.block_table, s.end)
            mask = None
            past = 0
            if s.start and n >= SPLIT_PAST_MIN_CHUNK and dev == "cpu":
                past = s.start
            elif s.start:
                # query i (position start + i) sees keys at positions <= start + i
                mask = (torch.arange(s.end)[None, :] <= torch.arange(s.start, s.end)[:, None]).to(dev)
            rows.append(PrefillRow(cursor, cursor + n, context, mask, past, start=s.start))
            cursor += n
        finishing = [i for i, s in enumerate(ordered) if s.is_last]
        token_index = []
        offset = 0
        for s in ordered:
            token_index.append(offset + s.num_tokens - 1)
            offset += s.num_tokens
        logits_index = None
        if finishing != [len(ordered) - 1]:
            logits_index = torch.tensor([token_index[i] for i in finishing], dtype=torch.long, device=dev)
        batch = AttentionBatch(
            slot_mapping=torch.tensor(slot_mapping, dtype=torch.long, device=dev),
            positions=torch.tensor(positions, device=dev),
            num_decode=len(decodes),
            decode_context=decode_context,
            decode_slots=decode_slots,
            decode_num_context=width,
            decode_mask=decode_mask,
            decode_lengths=decode_lengths,
            prefills=rows,
            logits_index=logits_index,
            decode_tables=decode_tables,
            decode_seq_lens=decode_seq_lens,
            block_size=self.block_size,
            decode_key_counts=[s.end for s in decodes],
        )
        logits = self.model.forward(torch.tensor(ids, device=dev), batch, self.kv)  # [R, V], R may be 0
        return [ordered[i] for i in finishing], logits
