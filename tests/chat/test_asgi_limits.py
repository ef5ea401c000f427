"""The body bounds of ``limit_requests`` as a server that streams bodies to the application
(uvicorn, hypercorn) exercises them: refusals come before the application sees the request."""
from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.test import override_settings

from chat.asgi_limits import limit_requests

pytestmark = pytest.mark.usefixtures("settings")  # a Django configuration, no database


class Recorder:
    """The application behind the wrapper: records the bodies it got and answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        self.bodies.append(message["body"])
        assert not message.get("more_body")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def request(app: Any, path: str = "/ai/run/m", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return ApplicationCommunicator(limit_requests(app), {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers or [],
        "client": ("127.0.0.1", 40000), "server": ("testserver", 80),
    })


async def response(communicator: Any) -> tuple[int, dict[bytes, bytes], Any]:
    start = await communicator.receive_output(timeout=5)
    body = await communicator.receive_output(timeout=5)
    return start["status"], dict(start["headers"]), json.loads(body["body"])


@override_settings(API_MAX_BODY_BYTES=1000)
async def test_a_declared_length_past_the_limit_is_413_before_any_body_is_read() -> None:
    app = Recorder()
    status, headers, body = await response(request(app, headers=[(b"content-length", b"10000000000")]))
    assert status == 413 and body["errors"] == [{"code": 3006, "message": "Request is too large"}]
    assert headers[b"Connection"] == b"close"
    assert app.bodies == []


@override_settings(API_MAX_BODY_BYTES=1000)
async def test_a_body_a_little_over_the_limit_is_read_to_its_end_before_the_413() -> None:
    """A client that sends its whole body before reading must get the error, not a reset
    connection (closing a socket with unread bytes resets it)."""
    app = Recorder()
    communicator = request(app, headers=[(b"content-length", b"2500")])
    for i in range(5):
        await communicator.send_input({"type": "http.request", "body": b"x" * 500, "more_body": i < 4})
    status, _, body = await response(communicator)
    assert status == 413 and body["errors"][0]["code"] == 3006
    assert communicator.input_queue.empty()  # every chunk was read
    assert app.bodies == []


@override_settings(API_MAX_BODY_BYTES=1000)
async def test_openai_paths_get_the_refusal_in_openais_shape() -> None:
    app = Recorder()
    status, _, body = await response(request(app, "/v1/chat/completions", [(b"content-length", b"5000")]))
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert app.bodies == []


@override_settings(API_MAX_BODY_BYTES=1000)
async def test_a_body_without_length_is_cut_as_soon_as_it_passes_the_limit() -> None:
    app = Recorder()
    communicator = request(app)
    for _ in range(3):
        await communicator.send_input({"type": "http.request", "body": b"x" * 400, "more_body": True})
    status, _, body = await response(communicator)
    assert status == 413 and body["errors"][0]["code"] == 3006
    assert app.bodies == []


@override_settings(REQUEST_BODY_TIMEOUT=1)
async def test_a_stalled_body_is_answered_408() -> None:
    app = Recorder()
    communicator = request(app, headers=[(b"content-length", b"100")])
    await communicator.send_input({"type": "http.request", "body": b"x" * 10, "more_body": True})
    status, _, body = await response(communicator)
    assert status == 408 and body["errors"][0]["code"] == 3007
    assert app.bodies == []


@override_settings(API_MAX_BODY_BYTES=1000)
async def test_a_body_within_the_limit_reaches_the_application_whole() -> None:
    app = Recorder()
    communicator = request(app, headers=[(b"content-length", b"1000")])
    await communicator.send_input({"type": "http.request", "body": b"a" * 600, "more_body": True})
    await communicator.send_input({"type": "http.request", "body": b"b" * 400})
    start = await communicator.receive_output(timeout=5)
    assert start["status"] == 200
    assert app.bodies == [b"a" * 600 + b"b" * 400]


async def test_a_client_that_leaves_mid_body_never_reaches_the_application() -> None:
    app = Recorder()
    communicator = request(app)
    await communicator.send_input({"type": "http.request", "body": b"{", "more_body": True})
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=5)
    assert app.bodies == []
