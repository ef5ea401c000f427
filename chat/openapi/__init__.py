"""The HTTP API as an OpenAPI 3.1 document, served at ``/openapi.json`` and rendered at ``/docs``.

Built from the constants the validators use (``chat/validation.py``, ``chat/openai_compat.py``),
so the documented limits are the enforced ones; ``tests/chat/test_openapi.py`` checks that every
route is documented, and the fuzz test that the server answers as documented.
"""
from __future__ import annotations

import copy
from importlib.metadata import version

from django.conf import settings

from ..validation import MAX_JSON_DEPTH
from . import conversations, native, openai_api
from .parts import AUTHENTICATED, PUBLIC, Schema, common_schemas, errors, nullable, obj, ok, operation

DESCRIPTION = """\
A self-hosted, Workers AI-shaped text-generation server.

- **Native API** (`/ai/...`, also under `/client/v4/accounts/{{account_id}}/ai/...`): JSON in Workers AI's \
envelope, `{{"result", "success", "errors": [{{"code", "message"}}], "messages"}}`.
- **OpenAI-compatible API** (`/v1/...`): OpenAI's shapes; errors as `{{"error": {{"message", "type", "code", \
"param"}}}}`. Model ids are catalog names.
- **Conversations** (`/api/conversations...`): the chat page's durable conversations, in the native envelope.

A body is one JSON object of at most {max_bytes} bytes (else 413), nested at most {depth} levels, whose \
strings hold no NUL characters and no lone surrogates (else 400). Streams are Server-Sent Events: one \
`data: <json>` event per text piece, then `data: [DONE]`; an error after the stream started comes as an \
event, and the stream ends without `[DONE]`."""


def _ops_paths() -> dict[str, Schema]:
    tag = "Operations"
    status = obj({"status": {"type": "string"}, "model": nullable({"type": "string"}),
                  "reason": nullable({"type": "string"}),
                  "models": {"type": "object", "additionalProperties": {"type": "string"},
                             "description": "Each enabled entry's state (as in `/ai/models/search`)."}},
                 ("status",))
    return {
        "/healthz": {"get": operation("healthz", tag, "Liveness", ok(status, "The process serves"), security=PUBLIC)},
        "/readyz": {"get": operation("readyz", tag, "Readiness", {
            **ok(status, "The default model is loaded"),
            "503": {"description": "Still loading, or unable to load (with the reason)",
                    "content": {"application/json": {"schema": status}}},
        }, security=PUBLIC)},
        "/metrics": {"get": operation(
            "metrics", tag, "Prometheus metrics",
            {"200": {"description": "Prometheus' text format",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}, **errors(401)},
            description="Open to localhost (unless `METRICS_ALLOW_LOCALHOST` is off); from elsewhere it needs a token.",
            security=[{}, {"bearer": []}])},
        "/openapi.json": {"get": operation("openapi", tag, "This document", ok({"type": "object"}, "OpenAPI 3.1"),
                                           security=PUBLIC)},
        "/docs": {"get": operation("reference", tag, "This document as a page", {"200": {
            "description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}, security=PUBLIC)},
    }


def build_document() -> Schema:
    """The whole document, as a fresh dict (callers may change it)."""
    parts = (native, openai_api, conversations)
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {
            "title": "Workers AI (self-hosted)",
            "version": version("workers-ai-selfhosted"),
            "description": DESCRIPTION.format(max_bytes=settings.API_MAX_BODY_BYTES, depth=MAX_JSON_DEPTH),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": "Native", "description": "Workers AI-shaped"},
                 {"name": "OpenAI", "description": "OpenAI-compatible"},
                 {"name": "Conversations", "description": "The chat page's conversations"},
                 {"name": "Operations", "description": "Health, metrics and this document"}],
        "security": AUTHENTICATED,
        "paths": {k: v for part in parts for k, v in part.paths().items()} | _ops_paths(),
        "components": {
            "schemas": {k: v for part in parts for k, v in part.schemas().items()} | common_schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "An API token, issued in the admin or by `manage.py create_api_token`."},
                "session": {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME,
                            "description": "The chat page's login session."},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRFToken",
                         "description": "With a session, unsafe methods also need the CSRF token (the "
                                        f"`{settings.CSRF_COOKIE_NAME}` cookie's value)."},
            },
        },
    })
