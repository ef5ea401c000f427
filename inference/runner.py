"""Owns the tensors: the model, the slot-indexed KV cache, and the batched forwards.

Active sequences occupy cache slots ``0..n-1``; when one leaves, the highest slot moves
into the hole (one copy per departure) so a decode step reads a contiguous view.
"""
from __future__ import annotations

import logging

import torch

from .loader import LoadedModel
from .model import KVCache
from .scheduler import PrefillChunk
from .sequence import Sequence

logger = logging.getLogger(__name__)


class ModelRunner:
    def __init__(self, loaded: LoadedModel, max_num_seqs: int) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        # a dynamically quantized CPU model still keeps fp32 activations and cache
        self.cache = KVCache(loaded.args, max_num_seqs, loaded.dtype, loaded.device)
        self.slots: list[Sequence | None] = [None] * max_num_seqs
        self.num_active = 0

    # slots -----------------------------------------------------------------
    def allocate(self, seq: Sequence) -> None:
        if self.num_active >= len(self.slots):
            raise RuntimeError("no free cache slot")  # the scheduler never over-admits
        seq.slot = self.num_active
        self.slots[self.num_active] = seq
        self.num_active += 1

    def release(self, seq: Sequence) -> Sequence | None:
        """Free ``seq``'s slot, moving the last active sequence into it.

        Never leaks the slot: if copying the moved sequence's cache fails, the slot is
        still freed and that sequence is returned; the caller must fail it.
        """
        slot = seq.slot
        if slot is None:
            return None
        last = self.num_active - 1
        moved = self.slots[last]
        broken = None
        if slot != last and moved is not None:
            try:
                self.cache.move_slot(last, slot, moved.num_computed_tokens)
            except Exception:
                logger.exception("moving cache slot %d to %d failed", last, slot)
                broken = moved
            moved.slot = slot
            self.slots[slot] = moved
        self.slots[last] = None
        self.num_active -= 1
        seq.slot = None
        return broken

    # forwards ----------------------------------------------------------------
    def _run(self, seqs: list[Sequence], tokens: list[list[int]], starts: list[int]) -> torch.Tensor:
        slots = [int(s.slot) for s in seqs if s.slot is not None]
        order = sorted(range(len(seqs)), key=lambda i: slots[i])
        sorted_slots = [slots[i] for i in order]
        width = max(len(t) for t in tokens)
        ids = torch.tensor([tokens[i] + [0] * (width - len(tokens[i])) for i in order])  # right-padded
        start = torch.tensor([starts[i] for i in order])
        last = torch.tensor([len(tokens[i]) - 1 for i in order])
        contiguous = sorted_slots == list(range(sorted_slots[0], sorted_slots[0] + len(seqs)))
        logits = self.model(
            ids.to(self.device),
            start.to(self.device),
            torch.tensor(sorted_slots, device=self.device),
            self.cache,
            last.to(self.device),
            contiguous=contiguous,
            # known here as Python ints: no device sync inside the forward
            num_keys=max(starts) + width,
            slot0=sorted_slots[0],
        )  # [N, V] in slot order
        if order == sorted(order):  # the usual case: callers already pass slot order
            return logits
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return logits[inverse.to(logits.device)]  # back to the caller's order

    def prefill(self, chunks: list[PrefillChunk]) -> torch.Tensor:
        """Compute the chunks' prompt positions; return logits ``[N, V]`` per chunk
        (meaningful only where ``chunk.is_last``)."""
        for c in chunks:
            if c.seq.slot is None:
                self.allocate(c.seq)
        logits = self._run(
            [c.seq for c in chunks],
            [c.seq.prompt_token_ids[c.start : c.end] for c in chunks],
            [c.start for c in chunks],
        )
        for c in chunks:
            c.seq.num_computed_tokens = c.end
        return logits

    def decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """One token for each sequence (its newest output token in, next logits out)."""
        logits = self._run(seqs, [[s.output_token_ids[-1]] for s in seqs], [s.num_tokens - 1 for s in seqs])
        for s in seqs:
            s.num_computed_tokens = s.num_tokens
        return logits
