"""Request state shared by the scheduler, the block manager and the engine. Pure Python."""
from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from typing import Any


class InvalidSamplingParams(ValueError):
    """A sampling setting is out of range; ``field`` names it."""

    def __init__(self, field_name: str, rule: str) -> None:
        super().__init__(f"{field_name} {rule}")
        self.field = field_name


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings (Workers AI defaults; temperature 0 means greedy).

    Construction checks every number, so a request can never bring a value that breaks
    the maths of a batch it shares (NaN, infinities, values that underflow to zero).
    """

    max_tokens: int = 256
    min_tokens: int = 0  # vLLM's: end-of-sequence and stop token ids and stop strings cannot end it sooner
    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k
    seed: int | None = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()  # end the answer like end-of-sequence, not part of it
    logprobs: int | None = None  # None: none; k: the sampled token's and the k likeliest (k <= 20)
    guide: Any = None  # an inference.guided.Guide: the output must match it

    def __post_init__(self) -> None:
        def finite(name: str, value: float, lo: float, hi: float) -> None:
            if not isinstance(value, int | float) or not math.isfinite(value) or not lo <= value <= hi:
                raise InvalidSamplingParams(name, f"must be a finite number from {lo} to {hi}")

        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidSamplingParams("max_tokens", "must be an integer >= 1")
        if not isinstance(self.min_tokens, int) or self.min_tokens < 0:
            raise InvalidSamplingParams("min_tokens", "must be an integer >= 0")
        if self.min_tokens > self.max_tokens:
            raise InvalidSamplingParams("min_tokens", "must be at most max_tokens")
        finite("temperature", self.temperature, 0.0, 5.0)
        if 0 < self.temperature < 1e-3:  # dividing logits by it overflows: treat as greedy
            object.__setattr__(self, "temperature", 0.0)
        finite("top_p", self.top_p, 0.0, 1.0)
        if self.top_p <= 1e-6:  # keeps only the most likely token either way
            object.__setattr__(self, "top_p", 1e-6)
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise InvalidSamplingParams("top_k", "must be an integer >= 0")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed < 2**63):
            raise InvalidSamplingParams("seed", "must be an integer from 0 to 2^63-1")
        finite("repetition_penalty", self.repetition_penalty, 0.0, 2.0)
        if self.repetition_penalty < 1e-2:  # dividing by it overflows
            object.__setattr__(self, "repetition_penalty", 1e-2)
        finite("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        finite("presence_penalty", self.presence_penalty, -2.0, 2.0)
        if not all(isinstance(t, int) and 0 <= t < 2**31 for t in self.stop_token_ids):
            raise InvalidSamplingParams("stop_token_ids", "must be token ids (integers >= 0)")
        if self.logprobs is not None and (not isinstance(self.logprobs, int) or not 0 <= self.logprobs <= 20):
            raise InvalidSamplingParams("logprobs", "must be an integer from 0 to 20")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0

    @property
    def has_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0
        )


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"
    FINISHED_ERROR = "error"

    @property
    def is_finished(self) -> bool:
        return self not in (RequestStatus.WAITING, RequestStatus.RUNNING)


@dataclass(eq=False)
class Sequence:
    """One request as the scheduler sees it: its tokens, progress, and KV blocks.

    ``all_token_ids`` is the prompt followed by the output so far; the first
    ``num_computed_tokens`` of them have keys and values in the blocks of
    ``block_table``. A step computes the next ones; when it computes the last, the
    sequence gets a new token. After a preemption everything is computed again (the
    prefix cache usually gives most of it back).
    """

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    max_model_len: int
    all_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # of the computed ones, how many came from the prefix cache
    status: RequestStatus = RequestStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)  # of the registered full blocks
    arrival_time: float = field(default_factory=time.monotonic)
    first_token_time: float | None = None
    num_preemptions: int = 0
    log_tag: str = ""

    def __post_init__(self) -> None:
        if not self.all_token_ids:
            self.all_token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.all_token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.all_token_ids[len(self.prompt_token_ids):]

    @property
    def is_prefilling(self) -> bool:
        """Still computing its prompt (or recomputing after a preemption)."""
        return self.num_tokens - self.num_computed_tokens > 1 or self.num_output_tokens == 0

    def append_token(self, token_id: int) -> None:
        self.all_token_ids.append(token_id)

    @property
    def finish_reason(self) -> str | None:
        return self.status.value if self.status.is_finished else None
