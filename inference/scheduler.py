"""Continuous batching over paged KV memory: who computes which tokens next. Pure Python.

There is no separate prefill and decode phase (as in vLLM v1): each running sequence
has tokens not yet computed (its prompt, a chunk of it, or just its newest token), and a
step computes some of them for many sequences at once. Sequences that reach their last
token get logits and a new token. The scheduler owns the ``BlockManager``: it admits a
waiting request only when its blocks are free, grows block tables as sequences get
longer, and when memory runs out preempts the newest running sequence (its blocks are
freed; it is recomputed later, mostly from the prefix cache).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .block_manager import BlockManager
from .errors import QueueFull
from .sequence import RequestStatus, Sequence

BURST_TOKENS_PER_REQUEST = 64


@dataclass(frozen=True)
class ScheduledSeq:
    seq: Sequence
    start: int  # first position computed in this step
    end: int  # one past the last

    @property
    def num_tokens(self) -> int:
        return self.end - self.start

    @property
    def is_last(self) -> bool:
        """Reaches the sequence's newest token: its logits give the next token."""
        return self.end == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_queue: int,
                 prefill_chunk_tokens: int) -> None:
        if max_num_seqs < 1 or max_queue < 0 or prefill_chunk_tokens < 1:
            raise ValueError("max_num_seqs >= 1, max_queue >= 0 and prefill_chunk_tokens >= 1 required")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_queue = max_queue
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue ``seq``; raises ``QueueFull`` when batch and queue are both full."""
        if len(self.waiting) + len(self.running) >= self.max_num_seqs + self.max_queue:
            raise QueueFull(retry_after=1)
        seq.status = RequestStatus.WAITING
        self.waiting.append(seq)

    def _chunk_end(self, seq: Sequence, budget: int) -> int:
        """Where a prompt chunk of ``seq`` starting at its computed tokens ends.

        A chunk never crosses the start of the block holding the last token: that is
        where a later identical request's prefix-cache hit ends, so splitting there
        makes the tokens after it computed the same way, cached or not, and the same
        request gives the same answer twice.
        """
        end = min(seq.num_tokens, seq.num_computed_tokens + budget)
        if self.block_manager.enable_prefix_caching:
            bs = self.block_manager.block_size
            boundary = bs * ((seq.num_tokens - 1) // bs)
            if seq.num_computed_tokens < boundary < end:
                end = boundary
        return end

    def schedule(self, prefill_budget: int | None = None) -> SchedulerOutput:
        """Decide the next step. ``prefill_budget`` caps the prompt tokens computed
        alongside running decodes (the engine sizes it so their latency holds);
        without decodes a step may compute ``prefill_chunk_tokens`` of prompt."""
        out = SchedulerOutput()
        bm = self.block_manager
        decoding = any(not s.is_prefilling for s in self.running)
        budget = self.prefill_chunk_tokens
        if decoding and prefill_budget is not None:
            # Beside running decodes a chunk stays small so their inter-token latency
            # holds, unless many requests wait for a first token: a burst of users then
            # outweighs a few streams' latency for one step (time to first token).
            num_pending = len(self.waiting) + sum(1 for s in self.running if s.is_prefilling)
            if num_pending >= 2:
                prefill_budget = max(prefill_budget, BURST_TOKENS_PER_REQUEST * num_pending)
            budget = max(1, min(budget, prefill_budget))
        # running sequences, oldest first; memory is taken from the newest if short
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            num_new = seq.num_tokens - seq.num_computed_tokens
            if num_new > 1 or seq.is_prefilling:
                if budget <= 0:
                    i += 1
                    continue
                num_new = self._chunk_end(seq, budget) - seq.num_computed_tokens
            end = seq.num_computed_tokens + num_new
            while bm.num_missing_blocks(seq, end) > bm.num_free_blocks:
                victim = self.running[-1]
                self._preempt(victim, out)
                if victim is seq:
                    break
            if seq.status is not RequestStatus.RUNNING:  # preempted itself
                break
            bm.grow(seq, end)
            out.scheduled.append(ScheduledSeq(seq, seq.num_computed_tokens, end))
            if num_new > 1 or seq.is_prefilling:
                budget -= num_new
            i += 1
        # then new arrivals (FCFS) while there is room, budget and memory
        while self.waiting and len(self.running) < self.max_num_seqs and budget > 0 and not out.preempted:
            seq = self.waiting[0]
            # admit only when the whole remaining prompt fits, so it does not stall half-way
            hits, needed_all = bm.num_blocks_to_admit(seq)
            if needed_all > bm.num_free_blocks:
                break
            self.waiting.popleft()
            bm.admit(seq, hits)
            end = self._chunk_end(seq, budget)
            num_new = end - seq.num_computed_tokens
            bm.grow(seq, end)
            seq.status = RequestStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append(ScheduledSeq(seq, seq.num_computed_tokens, end))
            budget -= num_new
        return out

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        """Free ``seq``'s memory and put it first in line to be recomputed."""
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = RequestStatus.WAITING
        seq.num_preemptions += 1
        self.waiting.appendleft(seq)
        out.preempted.append(seq)

    def update(self, out: SchedulerOutput) -> None:
        """After the step ran: advance progress and publish newly full blocks."""
        for s in out.scheduled:
            if s.seq.status is RequestStatus.RUNNING:
                s.seq.num_computed_tokens = s.end
                self.block_manager.register_computed(s.seq)

    def finish(self, seq: Sequence, status: RequestStatus) -> None:
        """Retire ``seq`` (running or waiting) with a finished status and free its
        blocks. Idempotent."""
        if not status.is_finished:
            raise ValueError(f"{status} is not a finished status")
        if seq.status.is_finished:
            return
        seq.status = status
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free(seq)

    def abort(self, request_id: str) -> Sequence | None:
        """Finish the request with ``abort`` wherever it is; returns it, or None if unknown."""
        for seq in (*self.running, *self.waiting):
            if seq.request_id == request_id:
                self.finish(seq, RequestStatus.FINISHED_ABORTED)
                return seq
        return None
