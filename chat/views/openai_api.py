"""The OpenAI-compatible API: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``.

Same tokens, rate limits, catalog and engines as the native API (``chat/views/api.py``); only the
shapes differ (``chat/openai_compat.py``). Model ids are catalog names.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from inference import (
    Engine,
    Finished,
    GenerationFailed,
    InferenceError,
    ParsedDelta,
    RemoteEngine,
    RequestStream,
    TokenLogprob,
    ToolCallParser,
    parse_tool_calls,
)

from ..auth import Principal
from ..catalog import get_engine, resolve_entry
from ..errors import ApiError
from ..generation import submit
from ..messages import Structure, new_call_id
from ..models import CatalogEntry
from ..openai_compat import (
    CompletionRequest,
    OpenAIError,
    model_name,
    parse_chat_body,
    parse_text_body,
    parse_tokenize_body,
    to_openai,
)
from ..sse import DONE, event, sse_response
from ..validation import parse_token_ids, read_json_body
from .door import api_view

logger = logging.getLogger(__name__)
MAX_DETOKENIZE = 100_000


# response shapes ---------------------------------------------------------------------
class _Shape:
    """What differs between the chat and the text endpoint: names, parsing, the choice objects."""

    object: str
    chunk_object: str
    id_prefix: str
    prompt_param: str
    has_opening_chunk: bool

    @staticmethod
    def parse(data: dict[str, Any], entry: CatalogEntry) -> CompletionRequest:
        raise NotImplementedError

    @staticmethod
    def choice(text: str, finish_reason: str, logprobs: list[TokenLogprob] | None) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def chunk_choice(delta: Delta, finish_reason: str | None, logprobs: list[TokenLogprob] | None) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class Delta:
    """What one chunk adds: text, and for chat, pieces of tool calls."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    opening: bool = False


def _chat_logprobs(logprobs: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if logprobs is None:
        return None

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**entry(lp.token, lp.logprob), "top_logprobs": [entry(t, p) for t, p in lp.top]}
                        for lp in logprobs], "refusal": None}


class _ChatShape(_Shape):
    object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    id_prefix = "chatcmpl-"
    prompt_param = "messages"
    has_opening_chunk = True  # the first chunk carries the role, as OpenAI's does
    parse = staticmethod(parse_chat_body)

    @staticmethod
    def choice(text: str, finish_reason: str, logprobs: list[TokenLogprob] | None) -> dict[str, Any]:
        return {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": _chat_logprobs(logprobs), "finish_reason": finish_reason}

    @staticmethod
    def chunk_choice(delta: Delta, finish_reason: str | None, logprobs: list[TokenLogprob] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"role": "assistant", "content": ""} if delta.opening else {}
        if delta.text:
            body["content"] = delta.text
        if delta.tool_calls:
            body["tool_calls"] = delta.tool_calls
        return {"index": 0, "delta": body, "logprobs": _chat_logprobs(logprobs) if logprobs else None,
                "finish_reason": finish_reason}


def _text_logprobs(logprobs: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    """The legacy completions shape: parallel lists, ``text_offset`` from the answer's start."""
    if logprobs is None:
        return None
    offsets = []
    for lp in logprobs:
        offsets.append(offset)
        offset += len(lp.token)
    return {"tokens": [lp.token for lp in logprobs], "token_logprobs": [lp.logprob for lp in logprobs],
            "top_logprobs": [dict(lp.top) for lp in logprobs], "text_offset": offsets}


class _TextShape(_Shape):
    object = "text_completion"
    chunk_object = "text_completion"
    id_prefix = "cmpl-"
    prompt_param = "prompt"
    has_opening_chunk = False
    parse = staticmethod(parse_text_body)

    @staticmethod
    def choice(text: str, finish_reason: str, logprobs: list[TokenLogprob] | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": _text_logprobs(logprobs), "finish_reason": finish_reason}

    @staticmethod
    def chunk_choice(delta: Delta, finish_reason: str | None, logprobs: list[TokenLogprob] | None) -> dict[str, Any]:
        return {"index": 0, "text": delta.text, "logprobs": _text_logprobs(logprobs) if logprobs else None,
                "finish_reason": finish_reason}


def _finish_reason(finished: Finished | None) -> str | None:
    """OpenAI's ``stop``/``length``; None when the request did not complete (error, abort)."""
    reason = finished.finish_reason if finished is not None else None
    return reason if reason in ("stop", "length") else None


def _openai_calls(calls: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"id": new_call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}
            for name, arguments in calls]


# views -------------------------------------------------------------------------------
@api_view("GET", envelope="openai", rate_limited=True)
async def list_models(request: HttpRequest, *, principal: Principal) -> HttpResponseBase:
    """``GET /v1/models``: every enabled catalog entry, listed or not currently available."""
    entries = CatalogEntry.objects.filter(is_enabled=True).order_by("-is_default", "name")  # the default first
    data = [_model_json(entry) async for entry in entries]
    return JsonResponse({"object": "list", "data": data})


@api_view("GET", envelope="openai", rate_limited=True)
async def retrieve_model(request: HttpRequest, model: str, *, principal: Principal) -> HttpResponseBase:
    """``GET /v1/models/<id>`` (the client's ``models.retrieve``)."""
    entry = await resolve_entry(model)
    return JsonResponse(_model_json(entry))


def _model_json(entry: CatalogEntry) -> dict[str, Any]:
    return {"id": entry.name, "object": "model", "created": int(entry.created_at.timestamp()),
            "owned_by": _owner(entry.name)}


def _owner(name: str) -> str:
    parts = name.split("/")  # @cf/<publisher>/<model>
    return parts[1] if len(parts) >= 3 and parts[1] else "system"


@api_view("POST", envelope="openai", rate_limited=True)
async def chat_completions(request: HttpRequest, *, principal: Principal) -> HttpResponseBase:
    """``POST /v1/chat/completions``, streamed (``chat.completion.chunk`` events) or not."""
    return await _serve(request, principal, _ChatShape)


@api_view("POST", envelope="openai", rate_limited=True)
async def completions(request: HttpRequest, *, principal: Principal) -> HttpResponseBase:
    """``POST /v1/completions``: a raw prompt, no chat template; streamed (``text_completion``) or not."""
    return await _serve(request, principal, _TextShape)


@api_view("POST", envelope="openai", rate_limited=True)
async def tokenize(request: HttpRequest, *, principal: Principal) -> HttpResponseBase:
    """``POST /tokenize`` (vLLM's): ``{model, prompt}`` as sent (no template) or ``{model, messages}`` through
    the chat template; answers ``{count, max_model_len, tokens}``."""
    try:
        data = read_json_body(request)
        entry = await resolve_entry(model_name(data))
        prompt, messages = parse_tokenize_body(data)
        engine = await local_engine(entry)
        ids = await asyncio.to_thread(engine.encode, prompt=prompt, messages=messages, raw=prompt is not None)
    except (ApiError, InferenceError, OpenAIError) as exc:
        return to_openai(exc).response()
    return JsonResponse({"count": len(ids), "max_model_len": entry.context_length, "tokens": ids})


@api_view("POST", envelope="openai", rate_limited=True)
async def detokenize(request: HttpRequest, *, principal: Principal) -> HttpResponseBase:
    """``POST /detokenize`` (vLLM's): ``{model, tokens}`` -> ``{prompt}``."""
    try:
        data = read_json_body(request)
        entry = await resolve_entry(model_name(data))
        tokens = list(parse_token_ids(data.get("tokens"), "tokens", max_items=MAX_DETOKENIZE))
        engine = await local_engine(entry)
        try:
            text = await asyncio.to_thread(engine.decode, tokens)
        except ValueError as exc:
            raise OpenAIError(400, f"'tokens': {exc}", param="tokens") from None
    except (ApiError, InferenceError, OpenAIError) as exc:
        return to_openai(exc).response()
    return JsonResponse({"prompt": text}, json_dumps_params={"ensure_ascii": False})


async def local_engine(entry: CatalogEntry) -> Engine:
    engine = await get_engine(entry)
    if isinstance(engine, RemoteEngine):
        raise OpenAIError(400, f"{entry.name} is served by a remote server: ask it for its tokens", param="model")
    return engine


async def _serve(request: HttpRequest, principal: Principal, shape: type[_Shape]) -> HttpResponseBase:
    """Validate, count and check the prompt, submit, then answer; every error before the
    stream has its OpenAI status (naming this shape's prompt field), errors after it
    starts come as a ``data: {"error": ...}`` event."""
    created = int(time.time())
    try:
        data = read_json_body(request)
        entry = await resolve_entry(model_name(data))
        body = shape.parse(data, entry)
        stream = await submit(principal, entry, "openai", body.params, prompt=body.prompt, messages=body.messages,
                              raw=body.prompt is not None, prompt_field=shape.prompt_param,
                              guide_field=body.structure.guide_field if body.structure else "response_format")
    except (ApiError, InferenceError, OpenAIError) as exc:
        return to_openai(exc, shape.prompt_param).response()

    head = {"id": f"{shape.id_prefix}{stream.request_id}", "object": shape.object, "created": created,
            "model": entry.name}
    structure = body.structure or Structure(body.messages)
    wants_logprobs = body.params.logprobs is not None
    if body.stream:
        return sse_response(_events(stream, shape, {**head, "object": shape.chunk_object},
                                    body.include_usage, structure.calls_expected, wants_logprobs))
    try:
        text = await stream.text()
    except GenerationFailed:
        return OpenAIError(500, "Generation failed", "server_error").response()
    finally:
        stream.abort()  # no-op when finished; frees the batch slot when the client left
    finish_reason = _finish_reason(stream.finished)
    if stream.finished is None or finish_reason is None:
        return OpenAIError(503, "The request was interrupted; please retry.", "server_error").response()
    choice = shape.choice(text, finish_reason, stream.take_logprobs() if wants_logprobs else None)
    if structure.calls_expected:
        rest, calls = parse_tool_calls(text)
        if calls:
            choice["message"].update(content=rest or None, tool_calls=_openai_calls(calls))
            choice["finish_reason"] = "tool_calls"
    return JsonResponse({**head, "choices": [choice], "usage": stream.finished.usage.as_dict()},
                        json_dumps_params={"ensure_ascii": False})


async def _events(stream: RequestStream, shape: type[_Shape], head: dict[str, Any], include_usage: bool,
                  calls_expected: bool = False, wants_logprobs: bool = False) -> AsyncIterator[str]:
    """Chunks (one per text piece, or per piece of a tool call), a closing chunk with
    ``finish_reason``, the usage chunk when asked for, then ``[DONE]``. Leaving early (client
    gone) aborts the request."""
    tail = {"usage": None} if include_usage else {}
    parser = ToolCallParser() if calls_expected else None
    ids: list[str] = []

    def chunk(delta: Delta, finish_reason: str | None = None) -> str:
        logprobs = stream.take_logprobs() if wants_logprobs else None
        return event({**head, "choices": [shape.chunk_choice(delta, finish_reason, logprobs)], **tail})

    def parsed(piece: ParsedDelta) -> Delta:
        calls: list[dict[str, Any]] = []
        for index, name in piece.starts:
            ids.append(new_call_id())
            calls.append({"index": index, "id": ids[index], "type": "function",
                          "function": {"name": name, "arguments": ""}})
        calls += [{"index": index, "function": {"arguments": text}} for index, text in piece.arguments]
        return Delta(piece.text, calls)

    try:
        if shape.has_opening_chunk:
            yield chunk(Delta(opening=True))
        async for piece in stream:
            delta = parsed(parser.feed(piece)) if parser is not None else Delta(piece)
            if delta.text or delta.tool_calls:
                yield chunk(delta)
        finish_reason = _finish_reason(stream.finished)
        if stream.finished is None or finish_reason is None:
            raise GenerationFailed(f"finished with {stream.finished.finish_reason if stream.finished else None}")
        if parser is not None:
            delta = parsed(parser.finish())
            if delta.text or delta.tool_calls:
                yield chunk(delta)
            if parser.calls:
                finish_reason = "tool_calls"
        yield chunk(Delta(), finish_reason)
        if include_usage:
            yield event({**head, "choices": [], "usage": stream.finished.usage.as_dict()})
        yield DONE
    except GenerationFailed as exc:
        logger.warning("stream %s failed: %s", stream.request_id, exc)
        yield event(OpenAIError(500, "Generation failed", "server_error").as_dict())
    finally:
        stream.abort()  # no-op when finished; frees the batch slot when the client left
