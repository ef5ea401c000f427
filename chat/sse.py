"""Server-Sent Events framing shared by every streaming endpoint."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from django.http import StreamingHttpResponse


def event(data: Any, *, name: str | None = None, event_id: str | int | None = None) -> str:
    """One SSE event; ``data`` is JSON-encoded unless it is already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = ""
    if event_id is not None:
        head += f"id: {event_id}\n"
    if name:
        head += f"event: {name}\n"
    return f"{head}data: {payload}\n\n"


DONE = "data: [DONE]\n\n"


def sse_response(events: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
