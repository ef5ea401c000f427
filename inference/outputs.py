"""What a caller gets back from an engine: a stream of text pieces, then how it finished."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from .errors import GenerationFailed


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose keys/values came from the prefix cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability and the likeliest alternatives (when asked for)."""

    token_id: int
    token: str
    logprob: float
    top: list[tuple[str, float]]


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # stop | length | abort | error
    usage: Usage
    time_to_first_token: float | None  # seconds
    duration: float  # seconds, arrival to finish
    error: str | None = None

    @property
    def tokens_per_second(self) -> float:
        if self.time_to_first_token is None or self.usage.completion_tokens < 2:
            return 0.0
        decode_time = self.duration - self.time_to_first_token
        return (self.usage.completion_tokens - 1) / decode_time if decode_time > 0 else 0.0


class RequestStream:
    """Async iterator of text pieces for one request; ``finished`` is set at the end.

    The engine's worker pushes lists of events (text pieces, then one ``Finished``)
    onto the stream's event loop. Leaving the iteration early (``aclose()``,
    cancellation, ``abort()``) aborts the request so its memory is freed at the next step.
    """

    def __init__(self, request_id: str, num_prompt_tokens: int, loop: asyncio.AbstractEventLoop,
                 abort: Callable[[str], None]) -> None:
        self.request_id = request_id
        self.num_prompt_tokens = num_prompt_tokens
        self.loop = loop
        self._abort = abort
        self.queue: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.finished: Finished | None = None  # set once the consumer reaches the end
        self._buffer: list[str] = []
        self.logprobs: list[TokenLogprob] = []  # of tokens whose text was handed out (take_logprobs)
        self._ended = asyncio.Event()  # set as soon as the end arrives, consumed or not
        self._final: Finished | None = None

    def push(self, events: list[Any]) -> bool:
        """Hand events over from any thread; False when nobody can receive them any
        more (the caller's event loop is closed)."""
        try:
            self.loop.call_soon_threadsafe(self._deliver, events)
        except RuntimeError:
            return False
        return True

    def _deliver(self, events: list[Any]) -> None:
        self.queue.put_nowait(events)
        if isinstance(events[-1], Finished):
            self._final = events[-1]
            self._ended.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        while not self._buffer:
            if self.finished is not None:
                if self.finished.finish_reason == "error":
                    raise GenerationFailed(self.finished.error or "generation failed")
                raise StopAsyncIteration
            try:
                events = await self.queue.get()
            except asyncio.CancelledError:
                self.abort()
                raise
            self._take(events)
        return self._buffer.pop(0)

    def _take(self, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, Finished):
                self.finished = ev
            elif isinstance(ev, TokenLogprob):
                self.logprobs.append(ev)
            elif ev:
                self._buffer.append(ev)

    def take_logprobs(self) -> list[TokenLogprob]:
        """The log-probabilities received so far and not yet taken."""
        taken, self.logprobs = self.logprobs, []
        return taken

    async def wait_finished(self) -> Finished:
        """Wait for the end (after an abort, say) and return how it finished; may run
        beside the consumer of the text (it reads no events)."""
        await self._ended.wait()
        assert self._final is not None
        return self._final

    async def aclose(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self.finished is None:
            self._abort(self.request_id)

    async def text(self) -> str:
        """Collect the whole answer (non-streamed use)."""
        return "".join([piece async for piece in self])
