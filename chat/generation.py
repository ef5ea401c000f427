"""The one submit path of the native and OpenAI APIs: encode, check, submit, record.

Views validate their own body shapes, then hand the prompt here. Each generation holds one
of its principal's generation slots (``chat.limits``), and its usage is recorded, once it
ends however it ends (finished, aborted because the client left, failed).
"""
from __future__ import annotations

import asyncio

from inference import InvalidGrammar, RemoteEngine, RequestStream, SamplingParams, UpstreamError, check_context

from .auth import Principal
from .catalog import get_engine
from .errors import invalid
from .limits import generation_slot
from .models import CatalogEntry
from .usage import record_usage_when_finished


async def submit(principal: Principal, entry: CatalogEntry, endpoint: str, params: SamplingParams, *,
                 prompt: str | None = None, messages: list[dict[str, str]] | None = None, raw: bool = False,
                 prompt_field: str = "prompt", guide_field: str = "response_format") -> RequestStream:
    """Start a generation on ``entry``'s engine; raises ``ApiError``/``InferenceError``
    before any work (too many generations of this principal, unavailable model, empty or
    too long prompt, a grammar that does not compile, full queue)."""
    async with generation_slot(principal.user, principal.token) as slot:
        engine = await get_engine(entry)
        if isinstance(engine, RemoteEngine):
            stream = await submit_remote(engine, entry, params, prompt, messages, raw, principal.label,
                                         guide_field)
            slot.release_when_finished(stream)
            record_usage_when_finished(stream, principal, entry.name, endpoint)
            return stream
        ids = await asyncio.to_thread(engine.encode, prompt=prompt, messages=messages, raw=raw)
        if not ids:
            raise invalid(f"'{prompt_field}' encodes to no tokens")
        check_context(len(ids), entry.context_length)
        if params.guide is not None:
            try:
                await asyncio.to_thread(engine.compile_guide, params.guide)
            except InvalidGrammar as exc:
                raise invalid(f"'{guide_field}' cannot be followed: {exc.reason}") from None
        stream = engine.submit(ids, params, log_tag=principal.label)
        slot.release_when_finished(stream)
    record_usage_when_finished(stream, principal, entry.name, endpoint)
    return stream


async def submit_remote(engine: RemoteEngine, entry: CatalogEntry, params: SamplingParams, prompt: str | None,
                        messages: list[dict[str, str]] | None, raw: bool, log_tag: str,
                        guide_field: str = "response_format") -> RequestStream:
    """Through a remote entry: the context is checked with the upstream's tokenizer where it has
    one (else the upstream checks it), then the upstream's stream is opened."""
    try:
        engine.compile_guide(params.guide)
    except UpstreamError as exc:
        raise invalid(exc.message if guide_field == "tools" else f"'{guide_field}': {exc.message}") from None
    count = await engine.count_tokens(prompt, messages, raw)
    if count is not None:
        check_context(count, entry.context_length)
    return await engine.start(params=params, prompt=prompt, messages=messages, raw=raw, num_prompt_tokens=count,
                              log_tag=log_tag)
