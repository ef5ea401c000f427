"""The API contract against a real daphne server (as ``make run`` serves it)."""
from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from tests.support import MODEL
from tests.support.server import LiveServer
from tests.support.sse import parse_sse

pytestmark = [pytest.mark.server, pytest.mark.model]


def run_url(server: LiveServer, model: str = MODEL) -> str:
    return f"{server.url}/ai/run/{model}"


def test_streamed_pieces_equal_the_answer_and_end_with_usage_and_done(live_server_proc: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {live_server_proc.token()}"}
    body = {"prompt": "Écris une phrase en français avec des accents, et un emoji 🎉.", "max_tokens": 40, "seed": 5}
    plain = httpx.post(run_url(live_server_proc), json=body, headers=auth, timeout=120).json()
    assert plain["success"] is True
    with httpx.stream("POST", run_url(live_server_proc), json={**body, "stream": True}, headers=auth,
                      timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
        events = parse_sse(r.read().decode())
    assert all(e.data_only for e in events) and events[-1].done
    final = events[-2].json()
    assert final["response"] == "" and final["usage"] == plain["result"]["usage"]
    assert "".join(e.json()["response"] for e in events[:-2]) == plain["result"]["response"]


def test_errors_over_http_carry_status_code_and_envelope(live_server_proc: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {live_server_proc.token()}"}
    cases = [
        (httpx.post(run_url(live_server_proc), json={"prompt": "hi"}), 401, 10000),
        (httpx.post(run_url(live_server_proc, "@cf/x/y"), json={"prompt": "hi"}, headers=auth), 400, 5007),
        (httpx.post(run_url(live_server_proc, "@cf/meta/llama-2-7b-chat-int8"), json={"prompt": "hi"}, headers=auth),
         503, 5008),
        (httpx.post(run_url(live_server_proc), content=b"{oops", headers=auth), 400, 5004),
        (httpx.post(run_url(live_server_proc), json={"prompt": "hi " * 9000}, headers=auth, timeout=60), 413, 5021),
        (httpx.post(run_url(live_server_proc), json={"prompt": "x" * (1024 * 1024 + 10)}, headers=auth), 413, 3006),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["success"] is False and body["result"] is None and body["errors"][0]["code"] == code
    overflow = cases[4][0].json()["errors"][0]["message"]
    assert "exceeded this model context window limit (6144)" in overflow
    assert httpx.get(run_url(live_server_proc), headers=auth).status_code == 405


def test_the_readme_curl_example_streams(live_server_proc: LiveServer) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    token = live_server_proc.token()
    out = subprocess.run(
        [curl, "-sN", run_url(live_server_proc),
         "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
         "-d", '{"prompt": "where is new york?", "stream": true}'],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    events = parse_sse(out)
    assert len(events) > 5 and events[-1].done and "usage" in events[-2].json()


def test_health_readiness_and_catalog(live_server_proc: LiveServer) -> None:
    assert httpx.get(f"{live_server_proc.url}/healthz").status_code == 200
    assert httpx.get(f"{live_server_proc.url}/readyz").status_code == 200
    names = [m["name"] for m in httpx.get(f"{live_server_proc.url}/ai/models/search").json()["result"]]
    assert MODEL in names and "@cf/meta/llama-2-7b-chat-fp16" in names
