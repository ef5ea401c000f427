"""Request bodies are bounded while they arrive, against a real server (as ``make run``
serves it): too large (declared or growing) is 413/3006 before the body is read, and before
authentication; too slow is 408/3007. Raw sockets, so the test controls what is sent and when."""
from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import MODEL
from tests.support.server import LiveServer, running_server

pytestmark = [pytest.mark.server, pytest.mark.model]

MAX_BODY = 65536
BODY_TIMEOUT = 3  # seconds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"API_MAX_BODY_BYTES": str(MAX_BODY), "REQUEST_BODY_TIMEOUT": str(BODY_TIMEOUT)}
    with running_server(tmp_path_factory.mktemp("bodies"), env) as live:
        yield live


def connect(server: LiveServer, head: str) -> socket.socket:
    """A connection that has sent ``head`` (request line and headers)."""
    url = urlsplit(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=BODY_TIMEOUT + 20)
    sock.sendall(head.encode())
    return sock


def head(path: str, *headers: str) -> str:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *headers, "", ""])


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of the answer, read until the server closes."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # it closed with our unread body still arriving
        pass
    sock.close()
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def test_a_declared_length_past_the_limit_is_413_before_the_body_is_sent(server: LiveServer) -> None:
    sock = connect(server, head(f"/ai/run/{MODEL}", "Content-Length: 10000000000"))
    status, headers, body = read_response(sock)  # no body sent, no token: refused anyway
    assert status == 413 and headers["connection"] == "close"
    assert body["success"] is False and body["errors"] == [{"code": 3006, "message": "Request is too large"}]


def test_openai_clients_get_the_refusal_in_openais_shape(server: LiveServer) -> None:
    sock = connect(server, head("/v1/chat/completions", f"Content-Length: {MAX_BODY + 1}", "Expect: 100-continue"))
    status, _, body = read_response(sock)
    assert status == 413 and body["error"]["code"] == "request_too_large"


def test_a_chunked_body_is_cut_once_it_grows_past_the_limit(server: LiveServer) -> None:
    sock = connect(server, head(f"/ai/run/{MODEL}", "Transfer-Encoding: chunked"))
    piece = b"x" * 8192
    sent = 0
    while sent < 100 * MAX_BODY and not select.select([sock], [], [], 0.05)[0]:
        try:
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(piece)
    assert sent < 100 * MAX_BODY  # answered while the body was still coming
    status, _, body = read_response(sock)
    assert status == 413 and body["errors"][0]["code"] == 3006


def test_a_stalled_upload_is_answered_408(server: LiveServer) -> None:
    sock = connect(server, head(f"/ai/run/{MODEL}", "Content-Length: 100") + '{"prompt": ')
    status, headers, body = read_response(sock)  # within BODY_TIMEOUT, or the socket times out
    assert status == 408 and headers["connection"] == "close"
    assert body["errors"][0]["code"] == 3007


def test_a_body_within_the_limit_reaches_the_api(server: LiveServer) -> None:
    filler = "x" * (MAX_BODY - 1000)
    payload = json.dumps({"prompt": 7, "filler": filler}).encode()
    sock = connect(server, head(f"/ai/run/{MODEL}", f"Authorization: Bearer {server.token()}",
                                f"Content-Length: {len(payload)}", "Connection: close"))
    sock.sendall(payload)
    status, _, body = read_response(sock)
    assert status == 400 and body["errors"][0]["code"] == 5004  # the API read it: 'prompt' must be a string


def test_the_server_still_serves_after_refusals(server: LiveServer) -> None:
    sock = connect(server, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    status, _, body = read_response(sock)
    assert status == 200 and body == {"status": "ok"}
