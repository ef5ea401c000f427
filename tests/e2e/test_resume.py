"""No answer lost: a server killed mid-answer (``kill -9``) and started again on the same
database finishes the answer where it stopped, and a page following it sees it end."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import start_server, stop_server
from tests.support.sse import parse_sse

pytestmark = [pytest.mark.model, pytest.mark.server]


def saved(db: Path, message_id: int) -> tuple[str, str]:
    """(state, content) of an answer, read from the database itself."""
    with sqlite3.connect(db) as connection:
        row = connection.execute("SELECT state, content FROM chat_message WHERE id = ?", [message_id]).fetchone()
    return row[0], row[1]


def test_an_answer_cut_by_kill_9_finishes_after_the_restart(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    server = start_server(tmp_path)
    try:
        auth = {"Authorization": f"Bearer {server.token('resume')}"}
        cid = httpx.post(f"{server.url}/api/conversations", json={}, headers=auth).json()["result"]["id"]
        r = httpx.post(f"{server.url}/api/conversations/{cid}/messages", headers=auth, timeout=60, json={
            "content": "Write a very long essay about the history of the sea.", "max_tokens": 400, "temperature": 0})
        assert r.status_code == 201, r.text
        turn: dict[str, Any] = r.json()["result"]
        mid = turn["assistant_message"]["id"]
        deadline = time.monotonic() + 120
        while len(saved(db, mid)[1]) < 40 and time.monotonic() < deadline:  # some text is saved
            time.sleep(0.2)
    finally:
        server.proc.kill()  # SIGKILL: nothing gets to finish the answer
        server.proc.wait(10)
    state, partial = saved(db, mid)
    assert state == "streaming" and len(partial) >= 40

    server = start_server(tmp_path)  # the same database
    try:
        with httpx.stream("GET", server.url + turn["stream_url"], params={"offset": len(partial)}, headers=auth,
                          timeout=300) as stream:
            assert stream.status_code == 200
            events = parse_sse(stream.read().decode())
        answer = httpx.get(f"{server.url}/api/conversations/{cid}", headers=auth).json()["result"]["messages"][-1]
        # SIGTERM stops a server that resumed answers after a crash, as any other (a supervisor
        # must not need SIGKILL)
        server.proc.terminate()
        started = time.monotonic()
        server.proc.wait(30)
        assert time.monotonic() - started < 10, server.log()
    finally:
        stop_server(server)
    assert events[-1].done and events[-2].json()["state"] == "done", server.log()
    assert answer["state"] == "done" and answer["error"] == "" and "Interrupted" not in answer["content"]
    assert answer["content"].startswith(partial) and len(answer["content"]) > len(partial)
    assert partial + "".join(e.json()["response"] for e in events[:-2]) == answer["content"]
