"""Talking to the API in-process through Django's async test client."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.test import AsyncClient

from tests.support import MODEL

NATIVE_URL = f"/ai/run/{MODEL}"
CHAT_URL = "/v1/chat/completions"
TEXT_URL = "/v1/completions"


class BearerClient(AsyncClient):
    """AsyncClient that sends ``Authorization: Bearer`` on every request.

    (Django 5.2's AsyncClient mangles client-level ``headers=`` into ``Http-*``.)
    """

    def __init__(self, token: str | None = None, authorization: str | None = None) -> None:
        super().__init__()
        value = authorization or (f"Bearer {token}" if token else None)
        self._auth = {"Authorization": value} if value else {}

    def generic(self, method: str, path: Any, *args: Any, headers: Mapping[str, str] | None = None,
                **kwargs: Any) -> Any:
        return super().generic(method, path, *args, headers={**self._auth, **(headers or {})}, **kwargs)


async def post_json(client: AsyncClient, url: str, body: object, **extra: Any) -> Any:
    """POST ``body`` as JSON; a ``str`` or ``bytes`` body goes as it is (for bodies JSON cannot build)."""
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return await client.post(url, data, content_type="application/json", **extra)


def native_error(response: Any) -> tuple[int, int]:
    """(HTTP status, error code) of a native error envelope, after checking its shape."""
    body = response.json()
    assert body["success"] is False and body["result"] is None and body["messages"] == []
    return response.status_code, body["errors"][0]["code"]


def openai_error(response: Any) -> dict[str, Any]:
    """The ``error`` object of an OpenAI error body, after checking its shape."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}, body
    return body["error"]


def chat_body(content: str = "Where is Paris?", **fields: Any) -> dict[str, Any]:
    """An OpenAI chat completion body asking ``MODEL`` one question."""
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


async def new_conversation(client: AsyncClient, **fields: str) -> int:
    """Create a conversation (``model``, ``system_prompt``, ``title``); its id."""
    r = await post_json(client, "/api/conversations", fields)
    assert r.status_code == 201, r.content
    return int(r.json()["result"]["id"])


async def send(client: AsyncClient, cid: int, content: str, **extra: object) -> Any:
    """Post a chat turn to conversation ``cid``."""
    return await post_json(client, f"/api/conversations/{cid}/messages", {"content": content, **extra})
