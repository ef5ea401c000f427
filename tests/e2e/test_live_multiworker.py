"""The deployment the README describes, started here: two ASGI workers behind one database
(PostgreSQL when it runs on 127.0.0.1:5432, else a shared SQLite file) and Redis, and a
remote upstream (another instance) for one catalog entry. Any worker can follow or stop any
answer, whichever process generates it, and both serve the remote entry."""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.support import MODEL
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


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database for the workers (dropped afterwards), or None without PostgreSQL."""
    import psycopg

    try:
        conn = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3)
    except psycopg.Error:
        yield None
        return
    name = f"wai_workers_{os.getpid()}"
    with conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgres://postgres@127.0.0.1:5432/{name}"
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


REMOTE = "@cf/remote/smollm2"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running_server(tmp_path_factory.mktemp("upstream")) as server:
        yield server


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory,
                upstream: LiveServer) -> Iterator[tuple[LiveServer, LiveServer]]:
    if not redis_is_up():
        pytest.skip("no Redis on 127.0.0.1:6379")
    tmp = tmp_path_factory.mktemp("workers")
    with postgres_database() as database:
        env = {"REDIS_URL": REDIS_URL, "DATABASE_URL": database or f"sqlite:///{tmp / 'shared.sqlite3'}",
               "UPSTREAM_KEY": upstream.token("gateway")}
        with running_server(tmp / "a", env) as a, running_server(tmp / "b", env) as b:
            a.manage("catalog", "add", REMOTE, "--source", f"openai:{upstream.url}/v1", "--upstream-model", MODEL,
                     "--context-length", "4096", "--max-output-tokens", "256", "--api-key-env", "UPSTREAM_KEY")
            yield a, b


def start_turn(server: LiveServer, token: str, content: str, max_tokens: int,
               model: str | None = None) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    body = {"model": model} if model else {}
    cid = httpx.post(f"{server.url}/api/conversations", json=body, headers=auth).json()["result"]["id"]
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


def test_the_remote_entry_serves_through_both_workers_and_its_answers_follow_across(two_workers) -> None:  # type: ignore[no-untyped-def]
    a, b = two_workers
    token = a.token("multi")
    auth = {"Authorization": f"Bearer {token}"}
    for server in (a, b):  # the entry was added through a; b reads it from the shared database
        r = httpx.post(f"{server.url}/ai/run/{REMOTE}", headers=auth, timeout=60,
                       json={"prompt": "Where is Rome?", "max_tokens": 8})
        assert r.status_code == 200 and r.json()["result"]["response"], r.text
    turn = start_turn(a, token, "Write a short story about a cat.", 60, model=REMOTE)
    with httpx.stream("GET", b.url + turn["stream_url"], headers=auth, timeout=120) as r:
        events = parse_sse(r.read().decode())
    assert events[-1].done and events[-2].json()["state"] == "done"
    followed = "".join(e.json()["response"] for e in events[:-2])
    saved = httpx.get(f"{b.url}/api/conversations/{turn['conversation']['id']}", headers=auth).json()
    assert followed == saved["result"]["messages"][-1]["content"] and followed
