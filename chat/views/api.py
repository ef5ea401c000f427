"""The native, Workers AI-shaped API: /ai/run/<model>, /ai/models/search."""
from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from inference import GenerationFailed, RequestStream, ToolCallParser, parse_tool_calls

from ..auth import Principal
from ..catalog import resolve_entry, state, unavailable
from ..errors import INTERNAL, ApiError, envelope, invalid, success_response
from ..generation import submit
from ..messages import Structure
from ..models import CatalogEntry
from ..sse import DONE, event, sse_response
from ..validation import parse_run_body, plain_int, read_json_body
from .door import api_view

logger = logging.getLogger(__name__)
MODELS_PER_PAGE = 50
MAX_MODELS_PER_PAGE = 100


@api_view("POST", rate_limited=True)
async def run(request: HttpRequest, model: str, account_id: str | None = None, *,
              principal: Principal) -> HttpResponseBase:
    """Run a text-generation model, streamed (SSE) or not. Errors before the stream
    carry their HTTP status; after it starts they come as ``event: error``."""
    data = read_json_body(request)
    entry = await resolve_entry(model)
    body = parse_run_body(data, entry.max_output_tokens)
    structure = body.structure or Structure(body.messages)
    stream = await submit(principal, entry, "native", body.params, prompt=body.prompt, messages=body.messages,
                          raw=body.raw, guide_field=structure.guide_field)

    if body.stream:
        return sse_response(_stream_events(stream, structure.calls_expected))
    try:
        text = await stream.text()
    except GenerationFailed:
        return ApiError(500, INTERNAL, "Generation failed").response()
    finally:
        stream.abort()  # no-op when finished; frees the slot when the client left
    finished = await stream.wait_finished()  # already set once text() returned
    result: dict[str, Any] = {"response": text}
    if structure.calls_expected:
        text, calls = parse_tool_calls(text)
        result = {"response": text, "tool_calls": [_native_call(name, args) for name, args in calls]}
    elif structure.json_response and finished.finish_reason == "stop":
        try:
            result["response"] = json.loads(text)  # Workers AI answers JSON mode with the object itself
        except ValueError:
            pass
    return success_response({**result, "usage": finished.usage.as_dict()})


def _native_call(name: str, arguments: str) -> dict[str, Any]:
    """A call as Workers AI returns it: arguments as an object (JSON text if cut short)."""
    try:
        return {"name": name, "arguments": json.loads(arguments)}
    except ValueError:
        return {"name": name, "arguments": arguments}


async def _stream_events(stream: RequestStream, calls_expected: bool = False) -> AsyncIterator[str]:
    """Text pieces as they come; tool calls, when the answer makes them, in one event at the end."""
    parser = ToolCallParser() if calls_expected else None
    try:
        async for piece in stream:
            if parser is not None:
                piece = parser.feed(piece).text
            if piece:
                yield event({"response": piece})
        finished = stream.finished
        if finished is not None:
            if parser is not None:
                rest = parser.finish().text
                if rest:
                    yield event({"response": rest})
                if parser.calls:
                    yield event({"response": "", "tool_calls": [_native_call(n, a) for n, a in parser.calls]})
            yield event({"response": "", "usage": finished.usage.as_dict()})
            yield DONE
    except GenerationFailed as exc:
        logger.warning("stream %s failed: %s", stream.request_id, exc)
        yield event({"errors": [{"code": INTERNAL, "message": "Generation failed"}]}, name="error")
    finally:
        stream.abort()  # no-op when finished; frees the slot when the client left


@api_view("GET", authenticated=False)
async def models_search(request: HttpRequest, account_id: str | None = None) -> HttpResponseBase:
    """The catalog, Workers AI-shaped, with availability; paged like Cloudflare's API
    (``page`` from 1, ``per_page`` up to 100; past the end the result is empty)."""
    page = _positive_int(request.GET.get("page"), "page", 1)
    per_page = min(_positive_int(request.GET.get("per_page"), "per_page", MODELS_PER_PAGE), MAX_MODELS_PER_PAGE)
    entries = CatalogEntry.objects.filter(is_enabled=True).order_by("name")
    total = await entries.acount()
    result = []
    async for entry in entries[(page - 1) * per_page : page * per_page]:
        reason = unavailable(entry)
        result.append({
            "id": entry.name,
            "name": entry.name,
            "description": entry.description,
            "task": {"name": "Text Generation"},
            "properties": [
                {"property_id": "context_length_limit", "value": str(entry.context_length)},
                {"property_id": "sequence_length_limit", "value": str(entry.max_output_tokens)},
                {"property_id": "precision", "value": entry.precision},
            ],
            "available": reason is None,
            "unavailable_reason": reason,
            "state": state(entry),
            "default": entry.is_default,
        })
    info = {"page": page, "per_page": per_page, "count": len(result), "total_count": total}
    return JsonResponse({**envelope(result), "result_info": info}, json_dumps_params={"ensure_ascii": False})


def _positive_int(raw: str | None, name: str, default: int) -> int:
    if not raw:
        return default
    value = plain_int(raw)
    if not value:
        raise invalid(f"'{name}' must be a positive integer")
    return value
