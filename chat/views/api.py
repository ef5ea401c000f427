"""The native, Workers AI-shaped API: /ai/run/<model>, /ai/models/search."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from inference import GenerationFailed, RequestStream

from ..auth import Principal
from ..catalog import resolve_entry, unavailable
from ..errors import INTERNAL, ApiError, envelope, invalid, success_response
from ..generation import submit
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
    stream = await submit(principal, entry, "native", body.params, prompt=body.prompt, messages=body.messages,
                          raw=body.raw)

    if body.stream:
        return sse_response(_stream_events(stream))
    try:
        text = await stream.text()
    except GenerationFailed:
        return ApiError(500, INTERNAL, "Generation failed").response()
    finally:
        stream.abort()  # no-op when finished; frees the slot when the client left
    finished = await stream.wait_finished()  # already set once text() returned
    return success_response({"response": text, "usage": finished.usage.as_dict()})


async def _stream_events(stream: RequestStream) -> AsyncIterator[str]:
    try:
        async for piece in stream:
            yield event({"response": piece})
        finished = stream.finished
        if finished is not None:
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
