"""Conversation endpoints for the chat page and for scripts (session or Bearer token).

JSON in the native envelope; the answer stream uses the native SSE framing plus ``id:``
lines (character offsets) so ``Last-Event-ID`` resumes where the reader left off.
"""
from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import reverse

from inference import InvalidGrammar

from .. import turns
from ..auth import Principal
from ..catalog import default_entry, get_engine, resolve_entry
from ..errors import ApiError, invalid, success_response
from ..follow import follow
from ..messages import parse_response_format
from ..models import Conversation, Message
from ..sse import sse_response
from ..validation import plain_int, read_json_body, sampling_params
from .door import api_view


def conversation_json(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.pk,
        "title": c.title or "New chat",
        "model": c.model,
        "system_prompt": c.system_prompt,
        "created_at": c.created_at.isoformat(),
        "updated_at": c.updated_at.isoformat(),
    }


def message_json(m: Message) -> dict[str, Any]:
    return {
        "id": m.pk,
        "role": m.role,
        "content": m.content,
        "state": m.state,
        "error": m.error,
        "finish_reason": m.finish_reason or None,
        "prompt_tokens": m.prompt_tokens,
        "completion_tokens": m.completion_tokens,
        "time_to_first_token_ms": m.time_to_first_token_ms,
        "tokens_per_second": m.tokens_per_second,
        "in_context": m.in_context,
        "created_at": m.created_at.isoformat(),
        "stream_url": stream_url(m) if m.role == Message.Role.ASSISTANT else None,
    }


def stream_url(m: Message) -> str:
    return reverse("message-stream", args=[m.conversation_id, m.pk])


async def _owned(principal: Principal, conversation_id: int) -> Conversation:
    """The caller's conversation; another user's (or none) answers 404."""
    c = await Conversation.objects.filter(pk=conversation_id, owner=principal.user).afirst()
    if c is None:
        raise ApiError(404, 7000, "Conversation not found")
    return c


async def _owned_answer(principal: Principal, conversation_id: int, message_id: int) -> Message:
    """The caller's assistant message in the caller's conversation, else 404."""
    c = await _owned(principal, conversation_id)
    m = await c.messages.filter(pk=message_id, role=Message.Role.ASSISTANT).afirst()
    if m is None:
        raise ApiError(404, 7000, "Message not found")
    return m


def _text(data: dict[str, Any], field: str, *, required: bool = False, max_length: int = 100_000) -> str:
    value = data.get(field)
    if value is None:
        if required:
            raise invalid(f"'{field}' is required")
        return ""
    if not isinstance(value, str):
        raise invalid(f"'{field}' must be a string")
    if required and not value.strip():
        raise invalid(f"'{field}' must not be empty")
    if len(value) > max_length:
        raise invalid(f"'{field}' must be at most {max_length} characters")
    return value


@api_view("GET", "POST")
async def conversations(request: HttpRequest, *, principal: Principal) -> HttpResponseBase:
    """GET: the caller's conversations, newest first. POST: create one
    (``model``, ``system_prompt``, ``title`` all optional)."""
    if request.method == "GET":
        rows = [conversation_json(c) async for c in Conversation.objects.filter(owner=principal.user)[:200]]
        return success_response(rows)
    data = read_json_body(request) if request.body else {}
    model = _text(data, "model")
    entry = await resolve_entry(model) if model else await default_entry()
    if entry is None:
        raise ApiError(503, 5008, "No model is enabled in the catalog")
    c = await Conversation.objects.acreate(
        owner=principal.user, model=entry.name,
        system_prompt=_text(data, "system_prompt", max_length=20_000), title=_text(data, "title", max_length=200),
    )
    return success_response(conversation_json(c), status=201)


@api_view("GET", "PATCH", "DELETE")
async def conversation_detail(request: HttpRequest, conversation_id: int, *, principal: Principal) -> HttpResponseBase:
    """GET: a conversation with its messages. PATCH: title/system prompt/model. DELETE."""
    c = await _owned(principal, conversation_id)
    if request.method == "GET":
        body = conversation_json(c)
        body["messages"] = [message_json(m) async for m in c.messages.order_by("created_at", "id")]
        return success_response(body)
    if request.method == "PATCH":
        data = read_json_body(request)
        if "title" in data:
            c.title = _text(data, "title", max_length=200)
        if "system_prompt" in data:
            c.system_prompt = _text(data, "system_prompt", max_length=20_000)
        if data.get("model"):
            c.model = (await resolve_entry(_text(data, "model"))).name
        await c.asave()
        return success_response(conversation_json(c))
    async for m in c.messages.filter(state=Message.State.STREAMING):
        await turns.stop(m)
    await c.adelete()
    return success_response({"id": conversation_id, "deleted": True})


@api_view("POST", rate_limited=True)
async def post_message(request: HttpRequest, conversation_id: int, *, principal: Principal) -> HttpResponseBase:
    """POST ``{"content", "model"?, "system_prompt"?, "max_tokens"?, "temperature"?, ...}``:
    saves the user message and a pending answer, starts generation, returns 201 with
    both messages and ``stream_url``."""
    c = await _owned(principal, conversation_id)
    data = read_json_body(request)
    content = _text(data, "content", required=True)
    entry = await resolve_entry(_text(data, "model") or c.model)
    system_prompt = _text(data, "system_prompt", max_length=20_000) if "system_prompt" in data else None
    guide = parse_response_format(data.get("response_format"), native=True)
    params = sampling_params(data, entry.max_output_tokens,
                             default_max_tokens=settings.CHAT_DEFAULT_MAX_TOKENS, guide=guide)
    if guide is not None:  # checked before anything is saved
        engine = await get_engine(entry)
        try:
            await asyncio.to_thread(engine.compile_guide, guide)
        except InvalidGrammar as exc:
            raise invalid(f"'response_format' cannot be followed: {exc.reason}") from None
    turn = await turns.start_turn(c, entry, content, params, principal.user, principal.token,
                                  system_prompt=system_prompt)
    return success_response({
        "conversation": conversation_json(c),
        "user_message": message_json(turn.user_message),
        "assistant_message": message_json(turn.assistant_message),
        "stream_url": stream_url(turn.assistant_message),
    }, status=201)


@api_view("GET")
async def message_stream(request: HttpRequest, conversation_id: int, message_id: int, *,
                         principal: Principal) -> HttpResponseBase:
    """SSE of an answer; resumes after the ``Last-Event-ID`` (or ``?offset=``) character."""
    m = await _owned_answer(principal, conversation_id, message_id)
    raw_offset = request.headers.get("Last-Event-ID") or request.GET.get("offset") or "0"
    offset = plain_int(raw_offset, max_digits=18) or 0
    return sse_response(follow(m.pk, offset))


@api_view("POST")
async def stop_message(request: HttpRequest, conversation_id: int, message_id: int, *,
                       principal: Principal) -> HttpResponseBase:
    """Cancel an answer on the server; the partial answer is kept (state ``stopped``)."""
    m = await _owned_answer(principal, conversation_id, message_id)
    if m.state == Message.State.STREAMING:
        await turns.stop(m)
    return success_response({"id": m.pk, "stopping": m.state == Message.State.STREAMING})
