"""Two ASGI workers behind one database and Redis: any worker can follow or stop any
answer, whichever process generates it."""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import LiveServer, running_server
from tests.support.sse import parse_sse

pytestmark = [pytest.mark.server, pytest.mark.model]
REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_is_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    if not redis_is_up():
        pytest.skip("no Redis on 127.0.0.1:6379")
    tmp = tmp_path_factory.mktemp("workers")
    env = {"REDIS_URL": REDIS_URL, "DATABASE_URL": f"sqlite:///{tmp / 'shared.sqlite3'}"}
    with running_server(tmp / "a", env) as a, running_server(tmp / "b", env) as b:
        yield a, b


def start_turn(server: LiveServer, token: str, content: str, max_tokens: int) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    cid = httpx.post(f"{server.url}/api/conversations", json={}, headers=auth).json()["result"]["id"]
    r = httpx.post(f"{server.url}/api/conversations/{cid}/messages", headers=auth,
                   json={"content": content, "max_tokens": max_tokens, "temperature": 0}, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["result"]


def test_a_stream_generated_by_one_worker_is_followed_through_another(two_workers) -> None:  # type: ignore[no-untyped-def]
    a, b = two_workers
    token = a.token("multi")
    auth = {"Authorization": f"Bearer {token}"}
    turn = start_turn(a, token, "Write a short story about a fox.", 60)
    time.sleep(1.0)  # mid-answer
    with httpx.stream("GET", b.url + turn["stream_url"], headers=auth, timeout=120) as r:
        assert r.status_code == 200
        events = parse_sse(r.read().decode())
    assert events[-1].done and events[-2].json()["state"] == "done"
    followed = "".join(e.json()["response"] for e in events[:-2])
    saved = httpx.get(f"{a.url}/api/conversations/{turn['conversation']['id']}", headers=auth).json()
    assert followed == saved["result"]["messages"][-1]["content"] and followed


def test_stop_sent_to_another_worker_cancels_generation(two_workers) -> None:  # type: ignore[no-untyped-def]
    a, b = two_workers
    token = a.token("multi")
    auth = {"Authorization": f"Bearer {token}"}
    turn = start_turn(a, token, "Write a very long essay about mountains.", 500)
    cid, mid = turn["conversation"]["id"], turn["assistant_message"]["id"]
    time.sleep(1.5)
    assert httpx.post(f"{b.url}/api/conversations/{cid}/messages/{mid}/stop", headers=auth).status_code == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = httpx.get(f"{b.url}/api/conversations/{cid}", headers=auth).json()["result"]["messages"][-1]
        if m["state"] != "streaming":
            break
        time.sleep(0.2)
    assert m["state"] == "stopped" and 0 < m["completion_tokens"] < 500
