"""Continuous-batching policy: who runs in the next step. Pure Python, no torch.

Each step decodes every running sequence that finished its prefill, and spends up to
``prefill_chunk_tokens`` on prompts: first the unfinished prefills of running sequences,
then newly admitted ones (FCFS) while the batch has room. Long prompts are chunked so a
new arrival never stalls the running streams for more than one chunk.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .errors import QueueFull
from .sequence import RequestStatus, Sequence


@dataclass(frozen=True)
class PrefillChunk:
    seq: Sequence
    start: int  # first prompt position computed in this step
    end: int  # one past the last

    @property
    def is_last(self) -> bool:
        return self.end == self.seq.num_prompt_tokens


@dataclass
class SchedulerOutput:
    prefills: list[PrefillChunk] = field(default_factory=list)
    decodes: list[Sequence] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.prefills and not self.decodes


class Scheduler:
    def __init__(self, max_num_seqs: int, max_queue: int, prefill_chunk_tokens: int) -> None:
        if max_num_seqs < 1 or max_queue < 0 or prefill_chunk_tokens < 1:
            raise ValueError("max_num_seqs >= 1, max_queue >= 0 and prefill_chunk_tokens >= 1 required")
        self.max_num_seqs = max_num_seqs
        self.max_queue = max_queue
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue ``seq``; raises ``QueueFull`` when batch and queue are both full."""
        if len(self.waiting) + len(self.running) >= self.max_num_seqs + self.max_queue:
            raise QueueFull(retry_after=1)
        seq.status = RequestStatus.WAITING
        self.waiting.append(seq)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.prefill_chunk_tokens
        for seq in self.running:
            if not seq.is_prefilling:
                out.decodes.append(seq)
            elif budget > 0:
                end = min(seq.num_prompt_tokens, seq.num_computed_tokens + budget)
                out.prefills.append(PrefillChunk(seq, seq.num_computed_tokens, end))
                budget -= end - seq.num_computed_tokens
        while self.waiting and len(self.running) < self.max_num_seqs and budget > 0:
            seq = self.waiting.popleft()
            seq.status = RequestStatus.RUNNING
            self.running.append(seq)
            end = min(seq.num_prompt_tokens, budget)
            out.prefills.append(PrefillChunk(seq, 0, end))
            budget -= end
        return out

    def finish(self, seq: Sequence, status: RequestStatus) -> None:
        """Retire ``seq`` (running or waiting) with a finished status. Idempotent."""
        if not status.is_finished:
            raise ValueError(f"{status} is not a finished status")
        if seq.status.is_finished:
            return
        seq.status = status
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def abort(self, request_id: str) -> Sequence | None:
        """Finish the request with ``abort`` wherever it is; returns it, or None if unknown."""
        for seq in (*self.running, *self.waiting):
            if seq.request_id == request_id:
                self.finish(seq, RequestStatus.FINISHED_ABORTED)
                return seq
        return None
