"""Two ASGI workers behind one database and Redis: any worker can follow or stop any
answer, whichever process generates it."""
from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.conftest import start_server, stop_server

pytestmark = pytest.mark.model
REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_is_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):  # type: ignore[no-untyped-def]
    if not redis_is_up():
        pytest.skip("no Redis on 127.0.0.1:6379")
    tmp = tmp_path_factory.mktemp("workers")
    env = {"REDIS_URL": REDIS_URL, "DATABASE_URL": f"sqlite:///{tmp / 'shared.sqlite3'}"}
    a = start_server(tmp / "a", env)
    b = start_server(tmp / "b", env)
    yield a, b
    stop_server(a)
    stop_server(b)


def events(text: str) -> list[str]:
    return [b.split("data: ", 1)[1] for b in text.split("\n\n") if "data: " in b]


def start_turn(server, token: str, content: str, max_tokens: int) -> dict:  # type: ignore[no-untyped-def]
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
        data = events(r.read().decode())
    assert data[-1] == "[DONE]" and json.loads(data[-2])["state"] == "done"
    followed = "".join(json.loads(d)["response"] for d in data[:-2])
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
