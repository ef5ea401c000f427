"""One engine per model: a scheduler, a runner, and a worker thread that steps them.

Callers on an asyncio loop ``submit()`` token ids and iterate the returned
``RequestStream``. The worker thread (never the event loop) repeats ``step()``:

    schedule -> execute -> sample -> process outputs

An exception in a step fails the requests of that step, never the loop; a request whose
sampling fails fails alone.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial

import torch

from . import host, memory, metrics
from .block_manager import BlockManager
from .catalog import ModelSpec
from .config import InferenceSettings
from .errors import ContextWindowExceeded, ModelUnavailable
from .guided import GrammarCompiler, Guide
from .loader import LoadedModel
from .output_processor import RequestState
from .outputs import Finished, RequestStream, TokenLogprob, Usage
from .prompts import FittedPrompt, PromptEncoder
from .runner import ModelRunner
from .sampling import TokenMasks, forbid_ending, sample, top_logprobs
from .scheduler import Scheduler, SchedulerOutput
from .sequence import RequestStatus, SamplingParams, Sequence

logger = logging.getLogger(__name__)
GIL_SWITCH_INTERVAL = 0.0005  # seconds; see Engine.__init__
MEMORY_RELEASE_INTERVAL = 10.0  # seconds between malloc_trim calls while the engine works
CHUNK_STEP_FACTOR = 2.2  # a step with a prompt chunk beside decodes: at most this times a decode-only step
MAX_CHUNK_BESIDE_DECODES = 512.0  # prompt tokens


class _StepTimer:
    """Sizes the prompt chunk computed beside running decodes, so that the streams'
    inter-token latency stays within about ``CHUNK_STEP_FACTOR`` times its idle value.

    A step's cost is not proportional to its prompt tokens: any chunk moves the linear
    layers from the weight-only kernels (a few rows) to dense GEMM (a fixed cost), and a
    chunk deep into a long prompt attends to all of it (a cost per token that grows with
    the depth). So the chunk is steered by feedback instead of a cost model: after each
    step with decodes and a chunk, it shrinks when the step ran over the target time and
    grows when it ran well under, from one token (the prompt always advances) up."""

    def __init__(self) -> None:
        self.decode_step = 0.02  # seconds for a step of decodes only (running average)
        self.chunk = 16.0  # prompt tokens beside decodes
        self._budget = 16  # what the latest schedule() was offered

    def observe(self, out: SchedulerOutput, seconds: float) -> None:
        # a chunk is a prompt's tokens (however few); a decode row is one token past the prompt
        chunks = [s for s in out.scheduled if s.num_tokens > 1 or s.start < s.seq.num_prompt_tokens]
        num_prompt = sum(s.num_tokens for s in chunks)
        if num_prompt == 0:
            self.decode_step = 0.8 * self.decode_step + 0.2 * seconds
            return
        if len(chunks) == len(out.scheduled):
            return  # prompts alone run at full size (prefill_chunk_tokens)
        target = CHUNK_STEP_FACTOR * self.decode_step
        if seconds > target:
            self.chunk = max(1.0, min(self.chunk, num_prompt) * max(0.5, target / seconds))
        elif seconds < 0.8 * target and num_prompt >= self._budget:  # the budget, not the prompt, was the limit
            self.chunk = min(MAX_CHUNK_BESIDE_DECODES, self.chunk * 1.25 + 1)

    def prefill_budget(self) -> int:
        self._budget = max(1, int(self.chunk))
        return self._budget


class Engine:
    """``loaded`` may be a model already loaded, or a function that loads it: then the
    worker loads it itself before serving (and the constructor waits). Doing all tensor
    work on one thread matters on CPUs: torch's OpenMP thread team belongs to the thread
    that runs a parallel op, and steps run from another thread were measured 1.5x slower
    on 2 cores. The worker is the main thread where the server offers it (``host``):
    twice as fast again."""

    def __init__(self, spec: ModelSpec, loaded: LoadedModel | Callable[[], LoadedModel],
                 settings: InferenceSettings | None = None) -> None:
        self.settings = settings = settings or InferenceSettings()
        self.spec = spec
        self.name = spec.name
        self._states: dict[str, RequestState] = {}
        self._timer = _StepTimer()
        self._lock = threading.Lock()  # guards scheduler and _states
        self._wakeup = threading.Condition(self._lock)
        self._aborts: set[str] = set()
        self._stopping = False
        self.last_used = time.monotonic()  # the pool unloads engines idle past INFERENCE_KEEP_ALIVE
        self._gauges = (
            metrics.REQUESTS_RUNNING.labels(self.name),
            metrics.REQUESTS_WAITING.labels(self.name),
            metrics.KV_CACHE_USAGE.labels(self.name),
        )
        # labelled children looked up once: the per-token path only observes
        self._ttft = metrics.TIME_TO_FIRST_TOKEN.labels(self.name)
        self._itl = metrics.INTER_TOKEN_LATENCY.labels(self.name)
        self._guided_steps = metrics.GUIDED_STEPS.labels(self.name)
        self._guided_rows = metrics.GUIDED_ROWS.labels(self.name)
        self._guided_mask = metrics.GUIDED_MASK_SECONDS.labels(self.name)
        self._guided_step = metrics.GUIDED_STEP_SECONDS.labels(self.name)
        # The worker releases the GIL for every torch op (hundreds per step) and must get it
        # back each time; with CPython's default 5 ms switch interval, busy Python threads
        # (the event loop serving many streams, database work) make each handback wait up to
        # 5 ms, and a 16-row step was seen taking a second. A short interval bounds the wait.
        memory.tune()
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._thread = host.start(partial(self._run, loaded), f"engine-{spec.name}")
        self._ready.wait()
        if self._load_error is not None:
            raise self._load_error

    def _setup(self, loaded: LoadedModel) -> None:
        settings, spec = self.settings, self.spec
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.prompts = PromptEncoder(loaded.tokenizer)
        self.grammars = GrammarCompiler(loaded.tokenizer, loaded.eos_token_ids)
        self._masks = TokenMasks()
        num_blocks = settings.kv_cache_tokens // settings.block_size + 1  # block 0: padding
        self.block_manager = BlockManager(num_blocks, settings.block_size, settings.prefix_caching)
        self.scheduler = Scheduler(self.block_manager, settings.max_batch_size, settings.max_queue,
                                   settings.prefill_chunk_tokens)
        self.runner = ModelRunner(loaded.model, num_blocks, settings.block_size, loaded.dtype)
        self.max_model_len = min(
            loaded.args.max_position_embeddings,
            spec.context_length + spec.max_output_tokens,
            self.block_manager.capacity_tokens,
        )

    def _run(self, loaded: LoadedModel | Callable[[], LoadedModel]) -> None:
        try:
            self._setup(loaded if isinstance(loaded, LoadedModel) else loaded())
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor's caller
            self._load_error = exc
            return
        finally:
            self.last_used = time.monotonic()  # idle from when it is ready, not from when loading began
            self._ready.set()
        self._loop()
        # unloaded (keep-alive, shutdown): let the weights and the KV cache go, and their pages
        del self.runner, self.loaded
        gc.collect()
        memory.release()

    # public API (event-loop side) ------------------------------------------------
    def encode(self, *, prompt: str | None = None, messages: list[dict[str, str]] | None = None,
               raw: bool = False) -> list[int]:
        """Token ids of a prompt as this model sees it (blocking: call it in a thread)."""
        return self.prompts.encode(prompt=prompt, messages=messages, raw=raw)

    def decode(self, token_ids: list[int]) -> str:
        """The text of ``token_ids`` (blocking); ``ValueError`` for an id outside the vocabulary."""
        return self.prompts.decode(token_ids)

    def fit_history(self, system_prompt: str, history: list[dict[str, str]], budget: int) -> FittedPrompt:
        """The newest messages of ``history`` that fit ``budget`` tokens (blocking)."""
        return self.prompts.fit_history(system_prompt, history, budget)

    def compile_guide(self, guide: Guide) -> None:
        """Check that ``guide`` compiles for this model (cached); raises ``InvalidGrammar``
        with the reason. Blocking (the first call builds the vocabulary's index): call it in
        a thread before ``submit``."""
        self.grammars.compile(guide)

    def submit(self, prompt_token_ids: list[int], params: SamplingParams,
               request_id: str | None = None, log_tag: str = "") -> RequestStream:
        """Queue a request; returns its stream. Raises ``QueueFull`` (no room) or
        ``ContextWindowExceeded`` (can never fit in this engine) before any work."""
        if not prompt_token_ids:
            raise ValueError("empty prompt")
        if len(prompt_token_ids) >= self.max_model_len:
            raise ContextWindowExceeded(len(prompt_token_ids), self.max_model_len - 1)
        seq = Sequence(
            request_id=request_id or uuid.uuid4().hex[:16],
            prompt_token_ids=list(prompt_token_ids),
            params=params,
            max_model_len=self.max_model_len,
            log_tag=log_tag,
        )
        stream = RequestStream(seq.request_id, seq.num_prompt_tokens, asyncio.get_running_loop(), self.abort)
        matcher = self.grammars.matcher(params.guide) if params.guide is not None else None
        state = RequestState(seq, stream, self.tokenizer, self.loaded.device, self.loaded.eos_token_ids, matcher)
        with self._wakeup:
            if self._stopping:
                raise ModelUnavailable(self.name, "the model is being unloaded; retry")
            self.scheduler.add(seq)  # may raise QueueFull
            self.last_used = time.monotonic()
            self._states[seq.request_id] = state
            self._wakeup.notify()
        return stream

    def abort(self, request_id: str) -> None:
        """Ask the worker to drop ``request_id``; takes effect before the next step."""
        with self._wakeup:
            if request_id in self._states:
                self._aborts.add(request_id)
                self._wakeup.notify()

    def idle_for(self) -> float:
        """Seconds since the engine last had work (0 while it has some)."""
        with self._lock:
            if self._states or self.scheduler.has_unfinished():
                return 0.0
            return time.monotonic() - self.last_used

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    def update_metrics(self) -> None:
        """Refresh this engine's gauges when they are read (/metrics), not every step."""
        with self._lock:
            running, waiting, usage = self._gauges
            running.set(self.num_running)
            waiting.set(self.num_waiting)
            usage.set(self.block_manager.usage)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Abort everything, stop the worker."""
        with self._wakeup:
            self._aborts.update(self._states)
            self._stopping = True
            self._wakeup.notify()
        self._thread.join(timeout)

    # worker ----------------------------------------------------------------------
    def _loop(self) -> None:
        released = time.monotonic()
        while True:
            with self._wakeup:
                if not self._aborts and not self.scheduler.has_unfinished() and released:
                    memory.release()  # going idle: hand the step's free pages back
                    released = 0.0
                while not self._stopping and not self._aborts and not self.scheduler.has_unfinished():
                    self._wakeup.wait()
                if self._stopping and not self._states:
                    return
            try:
                self.step()
            except Exception:  # pragma: no cover - step() already fails its requests
                logger.exception("engine %s: unexpected error in step", self.name)
                time.sleep(0.1)
            now = time.monotonic()
            if not released:
                released = now
            elif now - released > MEMORY_RELEASE_INTERVAL:
                memory.release()
                released = now

    def step(self) -> None:
        """One iteration: apply aborts, schedule, execute, sample, process outputs."""
        with self._wakeup:
            for request_id in self._aborts:
                state = self._states.get(request_id)
                if state is not None:
                    self._finish(state, RequestStatus.FINISHED_ABORTED)
            self._aborts.clear()
            hits_before = self.block_manager.stats.hit_tokens
            out = self.scheduler.schedule(self._timer.prefill_budget())
            hits = self.block_manager.stats.hit_tokens - hits_before
        if hits:
            metrics.PREFIX_CACHE_HIT_TOKENS.labels(self.name).inc(hits)
        if out.preempted:
            metrics.PREEMPTIONS.labels(self.name).inc(len(out.preempted))
        if out.is_empty:
            return
        self.last_used = time.monotonic()
        started = time.perf_counter()
        try:
            rows, logits = self.runner.execute(out)
            seqs = [r.seq for r in rows]
            states = [self._states[s.request_id] for s in seqs]
            matchers = [st.matcher for st in states]
            guided = sum(m is not None for m in matchers)
            if guided:
                masking = time.perf_counter()
                self._masks.apply(logits, matchers)
                self._guided_mask.inc(time.perf_counter() - masking)
            too_short = [(i, st.end_ids_list, st.matcher is not None) for i, st in enumerate(states)
                         if st.seq.num_output_tokens < st.seq.params.min_tokens]
            if too_short:
                forbid_ending(logits, too_short)
            tokens = sample(logits, seqs, [st.generator for st in states]) if rows else []
            logprobs = [self._logprobs(logits[i], st.seq, t) if st.seq.params.logprobs is not None
                        and isinstance(t, int) else None for i, (st, t) in enumerate(zip(states, tokens))]
        except Exception as exc:
            logger.exception("engine %s: step failed; failing its %d requests", self.name, len(out.scheduled))
            with self._wakeup:
                for s in out.scheduled:
                    state = self._states.get(s.seq.request_id)
                    if state is not None:
                        self._finish(state, RequestStatus.FINISHED_ERROR, error=type(exc).__name__)
            return
        elapsed = time.perf_counter() - started
        self._timer.observe(out, elapsed)
        if guided:
            self._guided_steps.inc()
            self._guided_rows.inc(guided)
            self._guided_step.inc(elapsed)
        now = time.monotonic()
        with self._wakeup:
            self.scheduler.update(out)
            for state, token, logprob in zip(states, tokens, logprobs):
                if state.seq.status.is_finished:  # aborted while the step ran: drop its token
                    continue
                if isinstance(token, Exception):
                    logger.error("engine %s: sampling failed for %s: %r", self.name, state.seq.request_id, token)
                    self._finish(state, RequestStatus.FINISHED_ERROR, error="sampling failed")
                    continue
                try:
                    self._process(state, token, now, logprob)
                except Exception:  # noqa: BLE001 - fails this request only
                    logger.exception("engine %s: output of %s failed", self.name, state.seq.request_id)
                    self._finish(state, RequestStatus.FINISHED_ERROR, error="output processing failed")

    def _logprobs(self, logits: torch.Tensor, seq: Sequence, token: int) -> TokenLogprob:
        k = seq.params.logprobs or 0
        logprob, top = top_logprobs(logits, token, k)
        decode = self.tokenizer.decode
        return TokenLogprob(token, decode([token]), logprob, [(decode([t]), lp) for t, lp in top])

    def _process(self, state: RequestState, token: int, now: float, logprob: TokenLogprob | None = None) -> None:
        seq = state.seq
        if seq.first_token_time is None:
            seq.first_token_time = now
            self._ttft.observe(now - seq.arrival_time)
        elif state.last_token_time is not None:
            self._itl.observe(now - state.last_token_time)
        state.last_token_time = now
        if token not in state.end_ids:
            seq.append_token(token)
        text, status = state.process(token)
        events: list[TokenLogprob | str] = [logprob] if logprob is not None else []
        if text:
            events.append(text)
        if events and not state.stream.push(events):
            status = RequestStatus.FINISHED_ABORTED  # its caller's event loop is gone
        if status is not None:
            self._finish(state, status)

    def _finish(self, state: RequestState, status: RequestStatus, error: str | None = None) -> None:
        """Retire a request, free its blocks, and tell its stream (caller holds the lock)."""
        seq = state.seq
        self._states.pop(seq.request_id, None)
        self.scheduler.finish(seq, status)
        now = time.monotonic()
        ttft = seq.first_token_time - seq.arrival_time if seq.first_token_time else None
        finished = Finished(
            finish_reason=status.value,
            usage=Usage(seq.num_prompt_tokens, seq.num_output_tokens,
                        min(seq.num_cached_tokens, seq.num_prompt_tokens)),
            time_to_first_token=ttft,
            duration=now - seq.arrival_time,
            error=error,
        )
        state.stream.push([finished])
        metrics.REQUESTS.labels(self.name, status.value).inc()
        metrics.PROMPT_TOKENS.labels(self.name).inc(seq.num_prompt_tokens)
        metrics.GENERATED_TOKENS.labels(self.name).inc(seq.num_output_tokens)
        metrics.REQUEST_DURATION.labels(self.name).observe(finished.duration)
        logger.info(
            "request id=%s model=%s token=%s prompt_tokens=%d cached_tokens=%d completion_tokens=%d ttft_ms=%s "
            "tokens_per_s=%.1f finish_reason=%s",
            seq.request_id, self.name, seq.log_tag or "-", seq.num_prompt_tokens, seq.num_cached_tokens,
            seq.num_output_tokens, f"{ttft * 1000:.0f}" if ttft is not None else "-",
            finished.tokens_per_second, status.value,
        )
