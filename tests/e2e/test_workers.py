"""``WORKERS=2 make run``: uvicorn's workers import the application inside their event loops;
each serves (no crash loop), answers, and the whole server stops on SIGTERM."""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.server import start_server, stop_server
from tests.support.sse import parse_sse

pytestmark = [pytest.mark.model, pytest.mark.server]


def test_two_workers_serve_answers_and_stop_on_sigterm(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"WORKERS": "2"})
    try:
        auth = {"Authorization": f"Bearer {server.token()}"}
        for _ in range(4):  # new connections: both workers get some
            r = httpx.post(f"{server.url}/ai/run/@cf/huggingfacetb/smollm2-135m-instruct", headers=auth, timeout=120,
                           json={"prompt": "Say hello.", "max_tokens": 8, "stream": True})
            assert r.status_code == 200, r.text
            assert parse_sse(r.text)[-1].done
        server.proc.terminate()
        started = time.monotonic()
        server.proc.wait(30)
        assert time.monotonic() - started < 10
    finally:
        stop_server(server)
    log = server.log()
    assert "SynchronousOnlyOperation" not in log and log.count("Started server process") == 2, log
