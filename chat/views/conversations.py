"""Conversation endpoints for the chat page and for scripts (session or Bearer token).

JSON in the native envelope; the answer stream uses the native SSE framing plus ``id:``
lines (character offsets) so ``Last-Event-ID`` resumes where the reader left off.
"""
from __future__ import annotations

import asyncio
import base64
from datetime import datetime
from typing import Any
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from inference import ContextWindowExceeded, InvalidGrammar, RemoteEngine, SamplingParams, pool

from .. import turns
from ..auth import Principal
from ..catalog import default_entry, get_engine, resolve_entry
from ..errors import ApiError, envelope, invalid, success_response
from ..follow import follow
from ..messages import parse_response_format
from ..models import CatalogEntry, Conversation, Message
from ..sse import sse_response
from ..tree import Tree, dialogue
from ..validation import plain_int, read_json_body, sampling_params
from .door import api_view


def conversation_json(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.pk,
        "title": c.title or "New chat",
        "model": c.model,
        "system_prompt": c.system_prompt,
        "current_leaf_id": c.current_leaf_id,
        "created_at": c.created_at.isoformat(),
        "updated_at": c.updated_at.isoformat(),
    }


def message_json(m: Message, tree: Tree | None = None) -> dict[str, Any]:
    return {
        "id": m.pk,
        "parent_id": m.parent_id,
        "sibling_ids": tree.siblings(m) if tree is not None else [m.pk],
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


PAGE_SIZE = 50


def _cursor(c: Conversation) -> str:
    return base64.urlsafe_b64encode(f"{c.updated_at.isoformat()}|{c.pk}".encode()).decode().rstrip("=")


def _after_cursor(raw: str) -> Q:
    """Conversations listed after the one ``raw`` (from ``result_info.cursor``) names."""
    try:
        when, pk = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().split("|")
        updated = datetime.fromisoformat(when)
        key = int(pk)
        if updated.tzinfo is None or not 0 < key < 2**63:
            raise ValueError(raw)
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise invalid("'cursor' is not one this server gave") from None
    return Q(updated_at__lt=updated) | Q(updated_at=updated, pk__lt=key)


def _snippet(text: str, query: str, width: int = 60) -> str:
    """The words around the first ``query`` in ``text``, for a search result."""
    at = text.lower().find(query.lower())
    if at < 0:
        return ""
    start, end = max(at - width, 0), min(at + len(query) + width, len(text))
    return ("…" if start else "") + " ".join(text[start:end].split()) + ("…" if end < len(text) else "")


@api_view("GET", "POST")
async def conversations(request: HttpRequest, *, principal: Principal) -> HttpResponseBase:
    """GET: the caller's conversations, most recently active first, a page at a time
    (``?limit=`` up to 200, default 50; ``?cursor=`` from the previous page's
    ``result_info.cursor``); ``?q=`` keeps those whose title or any message contains it.
    POST: create one (``model``, ``system_prompt``, ``title`` all optional)."""
    if request.method == "GET":
        return await _list(request, principal)
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


async def _list(request: HttpRequest, principal: Principal) -> HttpResponseBase:
    raw_limit = request.GET.get("limit")
    limit = plain_int(raw_limit, max_digits=3) if raw_limit is not None else PAGE_SIZE
    if limit is None or not 1 <= limit <= 200:
        raise invalid("'limit' must be an integer from 1 to 200")
    query = request.GET.get("q", "").strip()
    if len(query) > 200:
        raise invalid("'q' must be at most 200 characters")
    rows = Conversation.objects.filter(owner=principal.user)
    if request.GET.get("cursor"):
        rows = rows.filter(_after_cursor(request.GET["cursor"]))
    if query:
        found = Message.objects.filter(conversation__owner=principal.user, content__ucontains=query)
        rows = rows.filter(Q(title__ucontains=query) | Q(pk__in=found.values("conversation_id")))
    page = [c async for c in rows.order_by("-updated_at", "-id")[: limit + 1]]
    more = len(page) > limit
    page = page[:limit]
    result = [conversation_json(c) for c in page]
    if query:
        matches: dict[int, str] = {}
        hits = Message.objects.filter(conversation__in=[c.pk for c in page], content__ucontains=query)
        pairs = hits.order_by("created_at", "id").values_list("conversation_id", "content")
        async for conversation_id, content in pairs:
            matches.setdefault(conversation_id, _snippet(content, query))
        for row in result:
            row["match"] = matches.get(row["id"], "")
    body = envelope(result)
    body["result_info"] = {"count": len(result), "per_page": limit, "cursor": _cursor(page[-1]) if more else None}
    return JsonResponse(body, json_dumps_params={"ensure_ascii": False})


async def _branch(c: Conversation) -> tuple[Tree, list[Message]]:
    tree = await sync_to_async(Tree.of)(c)
    return tree, tree.path(tree.leaf(c))


async def _with_branch(c: Conversation) -> dict[str, Any]:
    """The conversation with the messages of the branch it shows, root first."""
    tree, path = await _branch(c)
    body = conversation_json(c)
    body["current_leaf_id"] = path[-1].pk if path else None
    body["messages"] = [message_json(m, tree) for m in path]
    return body


@api_view("GET", "PATCH", "DELETE")
async def conversation_detail(request: HttpRequest, conversation_id: int, *, principal: Principal) -> HttpResponseBase:
    """GET: a conversation with the messages of the branch it shows. PATCH: title/system
    prompt/model. DELETE."""
    c = await _owned(principal, conversation_id)
    if request.method == "GET":
        return success_response(await _with_branch(c))
    if request.method == "PATCH":
        data = read_json_body(request)
        fields = ["updated_at"]  # only what changed: a turn may be saving its branch meanwhile
        if "title" in data:
            c.title = " ".join(_text(data, "title", max_length=200).split())
            fields.append("title")
        if "system_prompt" in data:
            c.system_prompt = _text(data, "system_prompt", max_length=20_000)
            fields.append("system_prompt")
        if data.get("model"):
            c.model = (await resolve_entry(_text(data, "model"))).name
            fields.append("model")
        await c.asave(update_fields=fields)
        return success_response(conversation_json(c))
    async for m in c.messages.filter(state=Message.State.STREAMING):
        await turns.stop(m)
    await c.adelete()
    return success_response({"id": conversation_id, "deleted": True})


async def _turn_settings(data: dict[str, Any], c: Conversation) -> tuple[CatalogEntry, SamplingParams, str | None]:
    """The model, sampling settings and system prompt a turn is asked with; 400 before
    anything is saved when the structured output asked for cannot be followed."""
    entry = await resolve_entry(_text(data, "model") or c.model)
    system_prompt = _text(data, "system_prompt", max_length=20_000) if "system_prompt" in data else None
    guide = parse_response_format(data.get("response_format"), native=True)
    params = sampling_params(data, entry.max_output_tokens,
                             default_max_tokens=settings.CHAT_DEFAULT_MAX_TOKENS, guide=guide)
    if guide is not None:
        engine = await get_engine(entry)
        try:
            await asyncio.to_thread(engine.compile_guide, guide)
        except InvalidGrammar as exc:
            raise invalid(f"'response_format' cannot be followed: {exc.reason}") from None
    return entry, params, system_prompt


async def _turn_response(c: Conversation, turn: turns.Turn) -> HttpResponseBase:
    tree = await sync_to_async(Tree.of)(c)
    return success_response({
        "conversation": conversation_json(c),
        "user_message": message_json(turn.user_message, tree),
        "assistant_message": message_json(turn.assistant_message, tree),
        "stream_url": stream_url(turn.assistant_message),
    }, status=201)


def _parent_id(data: dict[str, Any]) -> int | None | turns._AfterLeaf:
    if "parent_id" not in data:
        return turns.AFTER_LEAF
    value = data["parent_id"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid("'parent_id' must be a message id (an integer) or null")
    return value


@api_view("POST", rate_limited=True)
async def post_message(request: HttpRequest, conversation_id: int, *, principal: Principal) -> HttpResponseBase:
    """POST ``{"content", "parent_id"?, "model"?, "system_prompt"?, "max_tokens"?, ...}``:
    saves the question and a pending answer, starts generation, returns 201 with both
    messages and ``stream_url``. The question follows the branch shown, or ``parent_id``
    (an answer; ``null`` for a new first question): asking again after an earlier answer
    edits the conversation into a new branch, and the old one stays."""
    c = await _owned(principal, conversation_id)
    data = read_json_body(request)
    content = _text(data, "content", required=True)
    parent_id = _parent_id(data)
    entry, params, system_prompt = await _turn_settings(data, c)
    turn = await turns.start_turn(c, entry, content, params, principal.user, principal.token,
                                  system_prompt=system_prompt, parent_id=parent_id)
    return await _turn_response(c, turn)


@api_view("POST", rate_limited=True)
async def regenerate_message(request: HttpRequest, conversation_id: int, message_id: int, *,
                             principal: Principal) -> HttpResponseBase:
    """A new answer to the question this answer answered (same settings as a message post);
    the old answer stays as an alternative. 201 like a message post."""
    c = await _owned(principal, conversation_id)
    data = read_json_body(request) if request.body else {}
    entry, params, system_prompt = await _turn_settings(data, c)
    turn = await turns.regenerate(c, entry, message_id, params, principal.user, principal.token,
                                  system_prompt=system_prompt)
    return await _turn_response(c, turn)


@api_view("POST")
async def select_message(request: HttpRequest, conversation_id: int, message_id: int, *,
                         principal: Principal) -> HttpResponseBase:
    """Show the branch through this message (an alternative answer or an edited question),
    continued where it was left off; returns the conversation like GET."""
    c = await _owned(principal, conversation_id)
    tree = await sync_to_async(Tree.of)(c)
    if message_id not in tree.messages:
        raise ApiError(404, 7000, "Message not found")
    if any(m.state == Message.State.STREAMING for m in tree.messages.values()):
        raise ApiError(409, 5004, "An answer is still streaming in this conversation; stop it first")
    c.current_leaf_id = tree.newest_leaf_under(message_id)
    await c.asave(update_fields=["current_leaf"])
    return success_response(await _with_branch(c))


@api_view("GET")
async def export_conversation(request: HttpRequest, conversation_id: int, *, principal: Principal) -> HttpResponseBase:
    """The branch shown, as a file: ``?format=markdown`` (default) or ``json``."""
    c = await _owned(principal, conversation_id)
    kind = request.GET.get("format", "markdown")
    if kind not in ("markdown", "md", "json"):
        raise invalid("'format' must be markdown or json")
    _, path = await _branch(c)
    name = slugify(c.title)[:60] or f"conversation-{c.pk}"  # ASCII, for every client
    utf8_name = quote(slugify(c.title, allow_unicode=True)[:60] or name)
    if kind == "json":
        body = conversation_json(c)
        body["exported_at"] = timezone.now().isoformat()
        body["messages"] = [{
            "id": m.pk, "parent_id": m.parent_id, "role": m.role, "content": m.content, "state": m.state,
            "finish_reason": m.finish_reason or None, "model": m.model or None,
            "created_at": m.created_at.isoformat(),
        } for m in path]
        response: HttpResponse = JsonResponse(body, json_dumps_params={"ensure_ascii": False, "indent": 2})
        response["Content-Disposition"] = f"attachment; filename=\"{name}.json\"; filename*=UTF-8''{utf8_name}.json"
        return response
    lines = [f"# {c.title or 'New chat'}", "", f"- Model: {c.model}", f"- Exported: {timezone.now().isoformat()}", ""]
    if c.system_prompt:
        lines += ["## System", "", c.system_prompt, ""]
    for m in path:
        heading = "User" if m.role == Message.Role.USER else "Assistant"
        if m.state == Message.State.STOPPED:
            heading += " (stopped)"
        elif m.state == Message.State.ERROR:
            heading += " (failed)"
        text = m.content
        if m.state == Message.State.ERROR and m.error:
            text = f"{text}\n\n_(Failed: {m.error})_" if text else f"_(Failed: {m.error})_"
        lines += [f"## {heading}", "", text, ""]
    response = HttpResponse("\n".join(lines), content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f"attachment; filename=\"{name}.md\"; filename*=UTF-8''{utf8_name}.md"
    return response


@api_view("POST")
async def context_usage(request: HttpRequest, *, principal: Principal) -> HttpResponseBase:
    """How much of the model's context the next turn would use, counted by its tokenizer:
    ``{"conversation_id"?, "parent_id"?, "model"?, "system_prompt"?, "content", "max_tokens"?}``
    → ``{"tokens", "context_length", "max_tokens", "fits", "dropped_ids"}`` (the messages that
    would fall out of the prompt)."""
    data = read_json_body(request)
    content = _text(data, "content")
    conversation_id = data.get("conversation_id")
    path: list[Message] = []
    c = None
    if conversation_id is not None:
        if isinstance(conversation_id, bool) or not isinstance(conversation_id, int):
            raise invalid("'conversation_id' must be an integer")
        c = await _owned(principal, conversation_id)
        tree, path = await _branch(c)
        parent_id = _parent_id(data)
        if not isinstance(parent_id, turns._AfterLeaf):
            if parent_id is not None and parent_id not in tree.messages:
                raise invalid("'parent_id' must be a message of this conversation, or null")
            path = tree.path(parent_id)
    model = _text(data, "model") or (c.model if c else "")
    entry = await resolve_entry(model) if model else await default_entry()
    if entry is None:
        raise ApiError(503, 5008, "No model is enabled in the catalog")
    system_prompt = _text(data, "system_prompt", max_length=20_000) if "system_prompt" in data else (
        c.system_prompt if c else "")
    # the answer's reserve, as a turn would take it; out of range counts as the nearest bound
    # (a meter shown while the user types: the turn itself refuses a bad max_tokens)
    raw = data.get("max_tokens")
    reserve = min(settings.CHAT_DEFAULT_MAX_TOKENS, entry.max_output_tokens)
    if isinstance(raw, int) and not isinstance(raw, bool):
        reserve = min(max(raw, 1), entry.max_output_tokens)
    previous = dialogue(path)
    history = [{"role": m.role, "content": m.content} for m in previous]
    history.append({"role": "user", "content": content})
    budget = max(entry.context_length - reserve, 1)
    result: dict[str, Any] = {"context_length": entry.context_length, "max_tokens": reserve,
                              "model": entry.name}
    # a meter shown while typing never loads a model: before the model is loaded, an estimate
    engine = pool.loaded(entry.name) or (await get_engine(entry) if entry.source.startswith("openai:") else None)
    if engine is None:
        system_chars = len(system_prompt)
        tokens = (system_chars + sum(len(m["content"]) for m in history)) // 4 + 4 * len(history)
        return success_response({**result, "tokens": tokens, "estimated": True, "fits": tokens <= budget,
                                 "dropped_ids": []})
    if isinstance(engine, RemoteEngine):  # the upstream sees the whole conversation
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        counted = await engine.count_tokens(None, system + history, False)
        tokens = counted if counted is not None else sum(len(m["content"]) for m in system + history) // 4
        return success_response({**result, "tokens": tokens, "estimated": counted is None,
                                 "fits": tokens <= budget, "dropped_ids": []})
    try:
        fitted = await asyncio.to_thread(engine.fit_history, system_prompt, history, budget)
    except ContextWindowExceeded as exc:
        return success_response({**result, "tokens": exc.num_tokens, "estimated": False, "fits": False,
                                 "dropped_ids": [m.pk for m in previous]})
    return success_response({**result, "tokens": len(fitted.token_ids), "estimated": False, "fits": True,
                             "dropped_ids": [m.pk for m in previous[: fitted.first_included]]})


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
