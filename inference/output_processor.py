"""From sampled tokens to what a caller sees: text pieces, stop checks, the finish.

Runs on the engine's worker thread, after the step: one ``RequestState`` per request
holds its detokenizer, stop matcher and random generator; ``check_finish`` decides,
from facts alone, whether a sequence ended.
"""
from __future__ import annotations

import random
from typing import Any

import torch

from .detokenizer import IncrementalDetokenizer, StopMatcher
from .outputs import RequestStream
from .sampling import make_generator
from .sequence import RequestStatus, Sequence


def check_finish(seq: Sequence, hit_stop: bool) -> RequestStatus | None:
    """The finished status ``seq`` reaches with its newest (non-EOS) token, or None."""
    if hit_stop:
        return RequestStatus.FINISHED_STOPPED
    if seq.num_output_tokens >= seq.params.max_tokens or seq.num_tokens >= seq.max_model_len:
        return RequestStatus.FINISHED_LENGTH
    return None


class RequestState:
    """Worker-side companions of a sequence: generator, detokenizer, stop matcher, stream."""

    def __init__(self, seq: Sequence, stream: RequestStream, tokenizer: Any, device: str,
                 eos_token_ids: frozenset[int], matcher: Any = None) -> None:
        self.seq = seq
        # tokens that end the answer without being part of it
        self.end_ids = eos_token_ids | frozenset(seq.params.stop_token_ids)
        self.end_ids_list = sorted(self.end_ids)  # masked while the answer is shorter than min_tokens
        self.matcher = matcher  # llguidance matcher when the output is constrained (inference.guided)
        self.stream = stream
        self.seed = seq.params.seed if seq.params.seed is not None else random.randrange(2**63)
        self.generator: torch.Generator | None = None if seq.params.is_greedy else make_generator(self.seed, device)
        self.detokenizer = IncrementalDetokenizer(tokenizer, seq.prompt_token_ids)
        self.stops = StopMatcher(seq.params.stop)
        self.last_token_time: float | None = None

    def process(self, token: int) -> tuple[str, RequestStatus | None]:
        """Take the newly sampled ``token`` (already appended to the sequence unless it
        ends it); return the text it completes and the finish, if any."""
        if token in self.end_ids:  # the end-of-sequence token is not part of the answer
            return self._flush()[0], RequestStatus.FINISHED_STOPPED
        piece = self.detokenizer.add(token)
        if self.seq.num_output_tokens < self.seq.params.min_tokens:  # too short to stop: nothing held back
            text, hit_stop = self.stops.flush() + piece, False
        else:
            text, hit_stop = self.stops.feed(piece)
        status = check_finish(self.seq, hit_stop)
        complete = False
        if self.matcher is not None and status is None:
            if not self.matcher.consume_token(token):  # the mask allowed it: a bug, not the caller's
                raise RuntimeError(f"grammar refused token {token}: {self.matcher.get_error()}")
            complete = self.matcher.is_stopped()  # the grammar is complete: nothing more may follow
        if status is RequestStatus.FINISHED_LENGTH or complete:
            tail, hit_stop = self._flush()
            text += tail
            if hit_stop or complete:  # the held-back text completed a stop string, or the grammar
                status = RequestStatus.FINISHED_STOPPED
        return text, status

    def _flush(self) -> tuple[str, bool]:
        """Text still held back (incomplete bytes, a possible stop-string start), and
        whether it ends in a stop string (then cut before it)."""
        tail, hit_stop = self.stops.feed(self.detokenizer.flush())
        return (tail, True) if hit_stop else (tail + self.stops.flush(), False)
