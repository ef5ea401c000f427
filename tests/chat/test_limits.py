"""Fair share: generations at once per token or user (429/3040 + Retry-After), slots freed
however a generation ends, and the requests-per-minute limit of browser sessions."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.contrib.auth import get_user_model
from django.core.asgi import get_asgi_application
from django.core.cache import cache
from django.test import AsyncClient, override_settings

from chat import background, limits
from chat.asgi_limits import limit_requests
from chat.errors import ApiError
from chat.models import ApiToken
from tests.support.api import (
    CHAT_URL,
    NATIVE_URL,
    chat_body,
    native_error,
    new_conversation,
    openai_error,
    post_json,
    send,
)

pytestmark = pytest.mark.django_db(transaction=True)

SHORT = {"prompt": "Say hi.", "max_tokens": 2}


class HeldGeneration:
    """Stands in for a running generation, which ends when the test says so."""

    def __init__(self) -> None:
        self._ended = asyncio.Event()

    async def wait_finished(self) -> None:
        await self._ended.wait()

    def finish(self) -> None:
        self._ended.set()


@pytest.fixture(autouse=True)
def fresh_counts() -> None:
    cache.clear()


async def alice_token() -> ApiToken:
    return await ApiToken.objects.select_related("owner").aget(owner__username="alice")


async def hold(user: Any, token: ApiToken | None, n: int = 1) -> HeldGeneration:
    """Take ``n`` of the principal's slots with one generation that runs until finished."""
    generation = HeldGeneration()
    for _ in range(n):
        async with limits.generation_slot(user, token) as slot:
            slot.release_when_finished(generation)  # type: ignore[arg-type]  # stands in for a RequestStream
    return generation


async def release(*generations: HeldGeneration) -> None:
    """End the held generations and let their slots go."""
    for generation in generations:
        generation.finish()
    await background.drain_background()


@override_settings(GENERATIONS_PER_PRINCIPAL=1)
@pytest.mark.usefixtures("no_engine")
async def test_a_token_past_its_generations_gets_429_3040_with_retry_after(client) -> None:  # type: ignore[no-untyped-def]
    token = await alice_token()
    running = await hold(token.owner, token)
    r = await post_json(client, NATIVE_URL, SHORT)
    assert native_error(r) == (429, 3040)
    assert int(r["Retry-After"]) >= 1
    assert "at once" in r.json()["errors"][0]["message"]
    await release(running)


@override_settings(GENERATIONS_PER_PRINCIPAL=1)
@pytest.mark.usefixtures("no_engine")
async def test_the_openai_api_answers_the_same_limit_in_its_shape(client) -> None:  # type: ignore[no-untyped-def]
    token = await alice_token()
    running = await hold(token.owner, token)
    r = await post_json(client, CHAT_URL, chat_body(max_tokens=2))
    assert r.status_code == 429 and int(r["Retry-After"]) >= 1
    assert openai_error(r)["code"] == "server_overloaded"
    await release(running)


@override_settings(GENERATIONS_PER_PRINCIPAL=1)
@pytest.mark.model
@pytest.mark.usefixtures("loaded")
async def test_a_finished_generation_frees_its_slot(client) -> None:  # type: ignore[no-untyped-def]
    token = await alice_token()
    running = await hold(token.owner, token)
    assert native_error(await post_json(client, NATIVE_URL, SHORT)) == (429, 3040)
    await release(running)
    for _ in range(2):  # the second would be refused if the first had kept its slot
        r = await post_json(client, NATIVE_URL, SHORT)
        assert r.status_code == 200, r.content


@override_settings(GENERATIONS_PER_PRINCIPAL=1)
@pytest.mark.model
@pytest.mark.usefixtures("loaded")
async def test_a_client_that_leaves_mid_stream_frees_its_slot(client, api_token) -> None:  # type: ignore[no-untyped-def]
    app = ApplicationCommunicator(limit_requests(get_asgi_application()), {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": NATIVE_URL, "raw_path": NATIVE_URL.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"authorization", f"Bearer {api_token}".encode()), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 40000), "server": ("testserver", 80),
    })
    body = {"prompt": "Count from one to one hundred in words.", "max_tokens": 400, "temperature": 0, "stream": True}
    await app.send_input({"type": "http.request", "body": json.dumps(body).encode()})
    start = await app.receive_output(timeout=60)
    assert start["status"] == 200
    piece = await app.receive_output(timeout=60)
    assert piece["body"].startswith(b"data: ")
    assert native_error(await post_json(client, NATIVE_URL, SHORT)) == (429, 3040)  # still generating
    await app.send_input({"type": "http.disconnect"})
    await app.wait(timeout=10)
    await background.drain_background()
    r = await post_json(client, NATIVE_URL, SHORT)
    assert r.status_code == 200, r.content


@override_settings(GENERATIONS_PER_PRINCIPAL=1)
@pytest.mark.model
async def test_a_failed_generation_frees_its_slot(client, loaded, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def broken(*args: Any) -> Any:
        raise RuntimeError("device lost")

    with monkeypatch.context() as patch:
        patch.setattr(loaded.runner, "execute", broken)
        r = await post_json(client, NATIVE_URL, SHORT)
        assert native_error(r) == (500, 3043)
    r = await post_json(client, NATIVE_URL, SHORT)
    assert r.status_code == 200, r.content


@override_settings(GENERATIONS_PER_PRINCIPAL=1)
@pytest.mark.model
@pytest.mark.usefixtures("loaded")
async def test_a_request_refused_before_generating_frees_its_slot(client) -> None:  # type: ignore[no-untyped-def]
    assert native_error(await post_json(client, NATIVE_URL, {"prompt": "hello " * 7000})) == (413, 5021)
    r = await post_json(client, NATIVE_URL, SHORT)
    assert r.status_code == 200, r.content


@override_settings(GENERATIONS_PER_PRINCIPAL=1)
@pytest.mark.usefixtures("no_engine")
async def test_a_token_may_be_allowed_more_than_the_server_default(client) -> None:  # type: ignore[no-untyped-def]
    token = await alice_token()
    token.max_concurrent_generations = 3
    await token.asave()
    running = await hold(token.owner, token, 2)
    assert limits.generations_allowed(token) == 3
    async with limits.generation_slot(token.owner, token):  # the third is still free
        pass
    running_too = await hold(token.owner, token)
    assert native_error(await post_json(client, NATIVE_URL, SHORT)) == (429, 3040)
    await release(running, running_too)


@override_settings(GENERATIONS_PER_PRINCIPAL=1)
@pytest.mark.usefixtures("no_engine")
async def test_zero_means_no_limit_and_tokens_do_not_share_slots(client) -> None:  # type: ignore[no-untyped-def]
    token = await alice_token()
    running = await hold(token.owner, token)
    other, _ = await sync_to_async(ApiToken.issue)(token.owner, "other")
    async with limits.generation_slot(other.owner, other):  # another token of the same user
        pass
    other.max_concurrent_generations = 0
    await other.asave()
    more = await hold(other.owner, other, 5)
    await release(running, more)


@override_settings(GENERATIONS_PER_PRINCIPAL=1)
async def test_a_slot_whose_process_died_frees_itself_after_its_lease(api_token, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    token = await alice_token()
    monkeypatch.setattr(limits, "LEASE_SECONDS", 1)
    await limits._acquire(token.owner, token)  # taken, then never renewed nor released
    with pytest.raises(ApiError):
        await limits._acquire(token.owner, token)
    await asyncio.sleep(1.5)
    await (await limits._acquire(token.owner, token)).release()


@override_settings(GENERATIONS_PER_PRINCIPAL=1)
async def test_a_running_generation_keeps_its_slot_past_the_lease(api_token, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    token = await alice_token()
    monkeypatch.setattr(limits, "LEASE_SECONDS", 1)
    monkeypatch.setattr(limits, "RENEW_SECONDS", 0.2)
    running = await hold(token.owner, token)
    await asyncio.sleep(1.5)
    with pytest.raises(ApiError):
        await limits._acquire(token.owner, token)
    await release(running)
    await (await limits._acquire(token.owner, token)).release()


async def session(username: str = "bob") -> AsyncClient:
    await sync_to_async(get_user_model().objects.create_user)(username, password="pw-bob-12345")
    browser = AsyncClient()
    await browser.alogin(username=username, password="pw-bob-12345")
    return browser


@override_settings(SESSION_RATE_LIMIT_PER_MINUTE=2)
@pytest.mark.usefixtures("no_engine")
async def test_a_browser_session_is_rate_limited_per_minute() -> None:
    browser = await session()
    cid = await new_conversation(browser)
    if time.time() % 60 > 55:  # let the three posts fall in one one-minute window
        await asyncio.sleep(60 - time.time() % 60)
    statuses = [(await post_json(browser, f"/api/conversations/{cid}/messages", {"content": ""})) for _ in range(3)]
    assert [r.status_code for r in statuses[:2]] == [400, 400]
    assert native_error(statuses[2]) == (429, 3036)
    assert 1 <= int(statuses[2]["Retry-After"]) <= 60


@override_settings(GENERATIONS_PER_PRINCIPAL=1)
@pytest.mark.model
@pytest.mark.usefixtures("loaded")
async def test_a_users_chat_answer_counts_against_them_until_it_finishes() -> None:
    browser = await session()
    first, second = await new_conversation(browser), await new_conversation(browser)
    r = await send(browser, first, "Count from one to one hundred in words.", max_tokens=400, temperature=0)
    assert r.status_code == 201  # nobody reads the answer: it goes on without the page
    assert native_error(await send(browser, second, "Hello?")) == (429, 3040)
    await background.drain_background()  # the answer ends
    r = await send(browser, second, "Hello?", max_tokens=2)
    assert r.status_code == 201, r.content
