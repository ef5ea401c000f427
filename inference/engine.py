"""One engine per model: a scheduler, a runner, and a worker thread that steps them.

Callers on an asyncio loop ``submit()`` a request and iterate the returned
``RequestStream`` for text pieces. The worker thread (never the event loop) runs
``step()``: schedule, forward, sample, detokenize, hand pieces to each request's queue
with ``loop.call_soon_threadsafe``. An exception fails the requests of that step, never
the loop.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import torch

from . import metrics
from .catalog import ModelSpec
from .detokenizer import IncrementalDetokenizer, StopMatcher
from .errors import GenerationFailed
from .loader import LoadedModel
from .runner import ModelRunner
from .sampling import make_generator, sample
from .scheduler import Scheduler, SchedulerOutput
from .sequence import RequestStatus, SamplingParams, Sequence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

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

    Leaving the iteration early (``aclose()``, cancellation, ``abort()``) aborts the
    request so its batch slot is freed at the next step.
    """

    def __init__(self, engine: Engine, seq: Sequence, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.seq = seq
        self.request_id = seq.request_id
        self.loop = loop
        self.queue: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.finished: Finished | None = None
        self._buffer: list[str] = []

    @property
    def num_prompt_tokens(self) -> int:
        return self.seq.num_prompt_tokens

    def _push(self, events: list[Any]) -> None:  # runs on the loop
        self.queue.put_nowait(events)

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
            elif ev:
                self._buffer.append(ev)

    async def wait_finished(self) -> Finished:
        """Wait for the end (after an abort, say) and return how it finished."""
        while self.finished is None:
            self._take(await self.queue.get())
        return self.finished

    async def aclose(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self.finished is None:
            self.engine.abort(self.request_id)

    async def text(self) -> str:
        """Collect the whole answer (non-streamed use)."""
        return "".join([piece async for piece in self])


class _RequestState:
    """Worker-side companions of a sequence: generator, detokenizer, stop matcher, sink."""

    def __init__(self, stream: RequestStream, tokenizer: Any, device: str) -> None:
        seq = stream.seq
        self.stream = stream
        self.seed = seq.params.seed if seq.params.seed is not None else random.randrange(2**63)
        self.generator = None if seq.params.is_greedy else make_generator(self.seed, device)
        self.detokenizer = IncrementalDetokenizer(tokenizer, seq.prompt_token_ids)
        self.stops = StopMatcher(seq.params.stop)
        self.last_token_time: float | None = None


class Engine:
    def __init__(self, spec: ModelSpec, loaded: LoadedModel, max_num_seqs: int = 16,
                 max_queue: int = 64, prefill_chunk_tokens: int = 512) -> None:
        self.spec = spec
        self.name = spec.name
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.scheduler = Scheduler(max_num_seqs, max_queue, prefill_chunk_tokens)
        self.runner = ModelRunner(loaded, max_num_seqs)
        self.max_model_len = min(
            loaded.args.max_position_embeddings, spec.context_length + spec.max_output_tokens
        )
        self._states: dict[str, _RequestState] = {}
        self._lock = threading.Lock()  # guards scheduler and _states
        self._wakeup = threading.Condition(self._lock)
        self._aborts: set[str] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"engine-{spec.name}", daemon=True)
        self._thread.start()
        self._running_gauge = metrics.REQUESTS_RUNNING.labels(self.name)
        self._waiting_gauge = metrics.REQUESTS_WAITING.labels(self.name)

    # public API (event-loop side) ------------------------------------------------
    def submit(self, prompt_token_ids: list[int], params: SamplingParams,
               request_id: str | None = None, log_tag: str = "") -> RequestStream:
        """Queue a request; returns its stream. Raises ``QueueFull`` before any work."""
        if not prompt_token_ids:
            raise ValueError("empty prompt")
        loop = asyncio.get_running_loop()
        seq = Sequence(
            request_id=request_id or uuid.uuid4().hex[:16],
            prompt_token_ids=list(prompt_token_ids),
            params=params,
            max_model_len=self.max_model_len,
            log_tag=log_tag,
        )
        stream = RequestStream(self, seq, loop)
        state = _RequestState(stream, self.tokenizer, self.loaded.device)
        with self._wakeup:
            self.scheduler.add(seq)  # may raise QueueFull
            self._states[seq.request_id] = state
            self._update_gauges()
            self._wakeup.notify()
        return stream

    def abort(self, request_id: str) -> None:
        """Ask the worker to drop ``request_id``; takes effect before the next step."""
        with self._wakeup:
            if request_id in self._states:
                self._aborts.add(request_id)
                self._wakeup.notify()

    @property
    def num_running(self) -> int:
        return self.scheduler.num_running

    @property
    def num_waiting(self) -> int:
        return self.scheduler.num_waiting

    def shutdown(self, timeout: float = 5.0) -> None:
        """Abort everything, stop the worker."""
        with self._wakeup:
            self._aborts.update(self._states)
            self._stopping = True
            self._wakeup.notify()
        self._thread.join(timeout)

    # worker ----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopping and not self._aborts and not self.scheduler.has_unfinished():
                    self._wakeup.wait()
                if self._stopping and not self._states:
                    return
            try:
                self.step()
            except Exception:  # pragma: no cover - step() already fails its requests
                logger.exception("engine %s: unexpected error in step", self.name)
                time.sleep(0.1)

    def step(self) -> None:
        """One iteration: apply aborts, schedule, forward, sample, postprocess."""
        with self._wakeup:
            for request_id in self._aborts:
                state = self._states.get(request_id)
                if state is not None:
                    self._finish(state.stream.seq, RequestStatus.FINISHED_ABORTED)
            self._aborts.clear()
            out = self.scheduler.schedule()
            self._update_gauges()
        if out.is_empty:
            return
        try:
            self._execute(out)
        except Exception as exc:
            logger.exception("engine %s: step failed; failing its %d requests", self.name,
                             len(out.prefills) + len(out.decodes))
            with self._wakeup:
                for seq in [c.seq for c in out.prefills] + out.decodes:
                    self._finish(seq, RequestStatus.FINISHED_ERROR, error=f"{type(exc).__name__}: {exc}")

    def _execute(self, out: SchedulerOutput) -> None:
        rows: list[Sequence] = []
        logits_parts: list[torch.Tensor] = []
        if out.prefills:
            logits = self.runner.prefill(out.prefills)
            done = [i for i, c in enumerate(out.prefills) if c.is_last]
            if done:
                rows += [out.prefills[i].seq for i in done]
                logits_parts.append(logits[done])
        if out.decodes:
            logits_parts.append(self.runner.decode(out.decodes))
            rows += out.decodes
        if not rows:
            return
        logits = torch.cat(logits_parts) if len(logits_parts) > 1 else logits_parts[0]
        states = [self._states[s.request_id] for s in rows]
        tokens = sample(logits, rows, [st.generator for st in states])
        now = time.monotonic()
        with self._wakeup:
            for seq, state, token in zip(rows, states, tokens):
                if seq.status.is_finished:  # aborted while the step ran
                    continue
                self._append_token(seq, state, token, now)

    def _append_token(self, seq: Sequence, state: _RequestState, token: int, now: float) -> None:
        seq.output_token_ids.append(token)
        if seq.first_token_time is None:
            seq.first_token_time = now
            metrics.TIME_TO_FIRST_TOKEN.labels(self.name).observe(now - seq.arrival_time)
        elif state.last_token_time is not None:
            metrics.INTER_TOKEN_LATENCY.labels(self.name).observe(now - state.last_token_time)
        state.last_token_time = now
        if token in self.loaded.eos_token_ids:
            seq.output_token_ids.pop()  # the end-of-sequence token is not part of the answer
            self._finish_with_tail(seq, state, RequestStatus.FINISHED_STOPPED)
            return
        text, hit_stop = state.stops.feed(state.detokenizer.add(token))
        self._emit(state, text)
        if hit_stop:
            self._finish(seq, RequestStatus.FINISHED_STOPPED)
        elif len(seq.output_token_ids) >= seq.params.max_tokens or seq.num_tokens >= seq.max_model_len:
            self._finish_with_tail(seq, state, RequestStatus.FINISHED_LENGTH)

    def _finish_with_tail(self, seq: Sequence, state: _RequestState, status: RequestStatus) -> None:
        """Emit text still held back (incomplete bytes, a possible stop-string start), then finish."""
        tail, hit_stop = state.stops.feed(state.detokenizer.flush())
        self._emit(state, tail if hit_stop else tail + state.stops.flush())
        self._finish(seq, RequestStatus.FINISHED_STOPPED if hit_stop else status)

    def _emit(self, state: _RequestState, *events: Any) -> None:
        events_list = [e for e in events if e != ""]
        if events_list:
            stream = state.stream
            stream.loop.call_soon_threadsafe(stream._push, events_list)

    def _finish(self, seq: Sequence, status: RequestStatus, error: str | None = None) -> None:
        """Retire ``seq`` and tell its stream (caller holds the lock)."""
        state = self._states.pop(seq.request_id, None)
        self.scheduler.finish(seq, status)
        broken = self.runner.release(seq)
        if broken is not None:  # its cache could not be moved: it cannot go on
            self._finish(broken, RequestStatus.FINISHED_ERROR, error="KV cache move failed")
        if state is None:
            return
        seq.finish_time = now = time.monotonic()
        ttft = seq.first_token_time - seq.arrival_time if seq.first_token_time else None
        finished = Finished(
            finish_reason=status.value,
            usage=Usage(seq.num_prompt_tokens, len(seq.output_token_ids)),
            time_to_first_token=ttft,
            duration=now - seq.arrival_time,
            error=error,
        )
        self._emit(state, finished)
        metrics.REQUESTS.labels(self.name, status.value).inc()
        metrics.PROMPT_TOKENS.labels(self.name).inc(seq.num_prompt_tokens)
        metrics.GENERATED_TOKENS.labels(self.name).inc(len(seq.output_token_ids))
        metrics.REQUEST_DURATION.labels(self.name).observe(finished.duration)
        logger.info(
            "request id=%s model=%s token=%s prompt_tokens=%d completion_tokens=%d ttft_ms=%s "
            "tokens_per_s=%.1f finish_reason=%s",
            seq.request_id, self.name, seq.log_tag or "-", seq.num_prompt_tokens,
            len(seq.output_token_ids), f"{ttft * 1000:.0f}" if ttft is not None else "-",
            finished.tokens_per_second, status.value,
        )

    def _update_gauges(self) -> None:
        self._running_gauge.set(self.scheduler.num_running)
        self._waiting_gauge.set(self.scheduler.num_waiting)
