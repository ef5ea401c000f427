"""Bounds on what a request may cost before Django (and so authentication) sees it.

``limit_requests(app)`` wraps the ASGI application. A body larger than ``API_MAX_BODY_BYTES``
is answered 413/3006 at once when ``Content-Length`` says so, else as soon as the bytes
received pass the limit; a request whose body is not complete ``REQUEST_BODY_TIMEOUT``
seconds after the application started is answered 408/3007. Errors come in the endpoint's
envelope: OpenAI's under ``/v1/``, Workers AI's elsewhere. The application then gets the
body in one message, which is how Django reads it anyway.

uvicorn (``make run``) streams the body to the application, so this wrapper bounds it as it
arrives. daphne (``manage.py runserver``, for development) receives the whole body before
the application starts; there the bounds apply only once it has.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Any

from django.conf import settings
from django.http import HttpResponse

from .errors import TIMEOUT, TOO_LARGE, ApiError
from .openai_compat import to_openai

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
DRAIN_FACTOR = 4  # a body up to this many times the limit is read to its end before the 413
DRAIN_SECONDS = 2.0


def too_large() -> ApiError:
    return ApiError(413, TOO_LARGE, "Request is too large")


def too_slow() -> ApiError:
    return ApiError(408, TIMEOUT, f"Request timeout: the body did not arrive within {settings.REQUEST_BODY_TIMEOUT}s")


def error_response(path: str, error: ApiError) -> HttpResponse:
    """``error`` in the envelope of the endpoint at ``path``; the connection is closed after it,
    as the rest of the body is not read."""
    response = to_openai(error).response() if path.startswith("/v1/") else error.response()
    response["Content-Length"] = str(len(response.content))
    response["Connection"] = "close"
    return response


def limit_requests(app: ASGIApp) -> ASGIApp:
    """``app`` behind the body bounds above."""
    async def bounded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        try:
            body = await _read_body(scope, receive)
        except ApiError as error:
            if error.status == 413:
                await _drain(scope, receive)
            return await _send_response(send, error_response(_app_path(scope), error))
        if body is None:  # the client left
            return None
        return await app(scope, _replay(body, receive), send)

    return bounded


def _app_path(scope: Scope) -> str:
    path: str = scope["path"]
    return path.removeprefix(scope.get("root_path", "")) or "/"


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # the server refuses a bad one itself
    return 0


async def _read_body(scope: Scope, receive: Receive) -> bytes | None:
    """The whole body (None when the client left first); raises the 413 and 408 above."""
    limit = settings.API_MAX_BODY_BYTES
    if _declared_length(scope) > limit:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(settings.REQUEST_BODY_TIMEOUT):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large()
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise too_slow() from None


async def _drain(scope: Scope, receive: Receive) -> None:
    """Read and drop the rest of a body a little over the limit before answering 413: most
    clients send the whole body before they read, and closing a socket with unread bytes
    resets it, so they would see a broken connection instead of the error. Bodies declared far
    larger or of no declared length, or arriving slowly, are not waited for (the connection is
    closed after the 413)."""
    budget = DRAIN_FACTOR * settings.API_MAX_BODY_BYTES
    declared = _declared_length(scope)
    if not declared or declared > budget or _expects_continue(scope):
        return  # (reading would send "100 Continue": an invitation to send what we refuse)
    with suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while budget > 0:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                budget -= len(message.get("body", b""))


def _expects_continue(scope: Scope) -> bool:
    return any(name.lower() == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"])


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body in one message, then whatever the server sends next
    (``http.disconnect``)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _send_response(send: Send, response: HttpResponse) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
