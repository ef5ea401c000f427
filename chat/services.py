"""The one module of the Django side that talks to ``inference``.

Resolves catalog rows to engines, encodes prompts with each model's tokenizer and chat
template, fits conversations into a context window, and records usage.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import threading
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from inference import (
    BUILTIN_CATALOG,
    DEFAULT_MODEL,
    ContextWindowExceeded,
    Engine,
    Finished,
    ModelNotFound,
    ModelSpec,
    ModelUnavailable,
    pool,
    unavailable_reason,
)

from .errors import from_inference
from .models import CatalogEntry, UsageRecord

logger = logging.getLogger(__name__)
_background: set[asyncio.Task[Any]] = set()


# catalog ---------------------------------------------------------------------------
async def resolve_entry(name: str) -> CatalogEntry:
    """The enabled catalog row called ``name``; raises the 400/5007 ``ApiError``."""
    entry = await CatalogEntry.objects.filter(name=name, is_enabled=True).afirst()
    if entry is None:
        raise from_inference(ModelNotFound(name))
    return entry


async def default_entry() -> CatalogEntry | None:
    entry = await CatalogEntry.objects.filter(is_default=True, is_enabled=True).afirst()
    return entry or await CatalogEntry.objects.filter(is_enabled=True).afirst()


def unavailable(entry: CatalogEntry) -> str | None:
    """Why ``entry`` cannot serve right now, or None. Cheap: never loads anything."""
    if pool.is_loaded(entry.name):
        return None
    return pool.failure(entry.name) or unavailable_reason(entry.to_spec(), pool.settings.allow_downloads)


async def get_engine(entry: CatalogEntry) -> Engine:
    """The running engine for ``entry`` (loading it if needed); 503/5008 when it cannot."""
    try:
        return await pool.aget(entry.to_spec())
    except ModelUnavailable as exc:
        raise from_inference(exc) from None


def preload_specs() -> list[ModelSpec]:
    """Specs named by ``INFERENCE_PRELOAD`` (``default`` means the catalog's default)."""
    names = [n for n in settings.INFERENCE_PRELOAD if n.lower() != "none"]
    specs: list[ModelSpec] = []
    try:
        rows = {e.name: e for e in CatalogEntry.objects.filter(is_enabled=True)}
        default = next((e for e in rows.values() if e.is_default), None)
        for name in names:
            entry = default if name == "default" else rows.get(name)
            if entry is not None:
                specs.append(entry.to_spec())
            else:
                logger.warning("INFERENCE_PRELOAD: %s is not an enabled catalog entry", name)
    except DatabaseError:  # not migrated yet: fall back to the built-in catalog
        builtin = {s.name: s for s in BUILTIN_CATALOG}
        wanted = [DEFAULT_MODEL if n == "default" else n for n in names]
        specs = [builtin[n] for n in wanted if n in builtin]
    return specs


def start_preload() -> None:
    specs = preload_specs()
    if specs:
        pool.preload(specs)


def default_model_name() -> str | None:
    try:
        entry = CatalogEntry.objects.filter(is_default=True).first()
    except DatabaseError:
        return DEFAULT_MODEL
    return entry.name if entry else None


def on_setting_changed(setting: str, **kwargs: Any) -> None:
    """Tests that override inference settings get fresh engines."""
    if setting.startswith("INFERENCE") or setting == "MODEL_CACHE_DIR":
        pool.configure(settings.INFERENCE)


# prompts -----------------------------------------------------------------------------
class _Encoder:
    """A private tokenizer copy per engine: the worker thread decodes with the original,
    and fast tokenizers must not be used from two threads at once."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = copy.deepcopy(tokenizer)
        self.lock = threading.Lock()

    def chat(self, messages: list[dict[str, str]]) -> list[int]:
        with self.lock:
            tok = self.tokenizer
            if getattr(tok, "chat_template", None):
                out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
                ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
                return list(ids)
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            return list(tok(text)["input_ids"])

    def raw(self, prompt: str) -> list[int]:
        with self.lock:
            return list(self.tokenizer(prompt)["input_ids"])


_encoders: dict[int, _Encoder] = {}
_encoders_lock = threading.Lock()


def encoder_for(engine: Engine) -> _Encoder:
    key = id(engine.tokenizer)
    with _encoders_lock:
        if key not in _encoders:
            _encoders[key] = _Encoder(engine.tokenizer)
        return _encoders[key]


async def encode(engine: Engine, *, prompt: str | None = None, messages: list[dict[str, str]] | None = None,
                 raw: bool = False) -> list[int]:
    """Token ids of the prompt as the model will see it (chat template unless ``raw``)."""
    enc = encoder_for(engine)
    if prompt is not None and raw:
        return await asyncio.to_thread(enc.raw, prompt)
    msgs = messages if messages is not None else [{"role": "user", "content": prompt or ""}]
    return await asyncio.to_thread(enc.chat, msgs)


def check_context(num_tokens: int, context_length: int) -> None:
    if num_tokens > context_length:
        raise ContextWindowExceeded(num_tokens, context_length)


@dataclass(frozen=True)
class FittedPrompt:
    token_ids: list[int]
    first_included: int  # index into the history of the oldest message sent


def fit_history(engine: Engine, system_prompt: str, history: list[dict[str, str]], budget: int) -> FittedPrompt:
    """The system prompt plus the newest messages of ``history`` whose encoding fits
    ``budget`` tokens (the context length less the answer's ``max_tokens``).

    Raises ``ContextWindowExceeded`` when even the newest message alone does not fit.
    Blocking (tokenizes); call it in a thread.
    """
    enc = encoder_for(engine)
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []

    def ids_from(start: int) -> list[int]:
        return enc.chat(system + history[start:])

    last = len(history) - 1
    newest = ids_from(last)
    if len(newest) > budget:
        raise ContextWindowExceeded(len(newest), budget)
    lo, hi = 0, last  # find the smallest start that fits (fewer messages, fewer tokens)
    best = newest
    while lo < hi:
        mid = (lo + hi) // 2
        ids = ids_from(mid)
        if len(ids) <= budget:
            hi, best = mid, ids
        else:
            lo = mid + 1
    start = hi
    if start < last and history[start]["role"] == "assistant":  # templates want a user turn first
        start += 1
    ids = newest if start == last else best if start == hi else ids_from(start)
    return FittedPrompt(ids, start)


# usage ------------------------------------------------------------------------------
async def record_usage(*, user: Any, token: Any, model: str, endpoint: str, finished: Finished) -> None:
    await UsageRecord.objects.acreate(
        user=user,
        token=token,
        model=model,
        endpoint=endpoint,
        prompt_tokens=finished.usage.prompt_tokens,
        completion_tokens=finished.usage.completion_tokens,
        finish_reason=finished.finish_reason,
        time_to_first_token_ms=int(finished.time_to_first_token * 1000) if finished.time_to_first_token else None,
        duration_ms=int(finished.duration * 1000),
    )


def record_usage_when_finished(stream: Any, principal: Any, model: str, endpoint: str) -> None:
    """Record a request's usage once it ends; detached, so it also happens after the
    client hung up (the abort still reports the tokens generated so far)."""
    async def record() -> None:
        finished = await stream.wait_finished()
        await record_usage(user=principal.user, token=principal.token, model=model, endpoint=endpoint,
                           finished=finished)

    run_in_background(record())


def run_in_background(coro: Any) -> asyncio.Task[Any]:
    """Start ``coro`` detached from the request (keeps a reference until it ends)."""
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def drain_background() -> None:
    """Wait for detached tasks (tests)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)


# rate limits ------------------------------------------------------------------------
def check_rate_limit(principal: Any) -> None:
    """Per-token requests-per-minute limit (fixed one-minute windows in Django's cache,
    shared by every process when the cache is Redis); raises 429 with Retry-After."""
    import time

    from django.core.cache import cache

    from .errors import RATE_LIMITED, ApiError

    token = principal.token
    if token is None or not token.rate_limit_per_minute:
        return
    now = time.time()
    key = f"wai:rate:{token.pk}:{int(now // 60)}"
    count = 1 if cache.add(key, 1, timeout=90) else cache.incr(key)
    if count > token.rate_limit_per_minute:
        retry_after = max(1, 60 - int(now % 60))
        raise ApiError(429, RATE_LIMITED, f"Rate limit of {token.rate_limit_per_minute} requests per minute exceeded",
                       {"Retry-After": str(retry_after)})
