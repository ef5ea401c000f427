"""Chat turns: persisted answers, stop, re-attach, ownership, and the context rule."""
from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from chat import background
from chat.models import ApiToken, CatalogEntry, Conversation, Message, UsageRecord
from inference import pool
from tests.chat.conftest import BearerClient

MODEL = "@cf/huggingfacetb/smollm2-135m-instruct"
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model]


@pytest.fixture(autouse=True)
def loaded(engine):  # type: ignore[no-untyped-def]
    pool.set(MODEL, engine)
    return engine


async def new_conversation(client: AsyncClient, **fields: str) -> int:
    r = await client.post("/api/conversations", json.dumps(fields), content_type="application/json")
    assert r.status_code == 201, r.content
    return int(r.json()["result"]["id"])


async def send(client: AsyncClient, cid: int, content: str, **extra: object):  # type: ignore[no-untyped-def]
    return await client.post(f"/api/conversations/{cid}/messages", json.dumps({"content": content, **extra}),
                             content_type="application/json")


async def sse_events(response) -> list[tuple[str | None, str]]:  # type: ignore[no-untyped-def]
    """(id, data) of each event until the stream ends."""
    text = b"".join([c async for c in response.streaming_content]).decode()
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "data" in fields:
            out.append((fields.get("id"), fields["data"]))
    return out


async def wait_state(message_id: int, timeout: float = 60) -> Message:
    for _ in range(int(timeout * 10)):
        m = await Message.objects.aget(pk=message_id)
        if m.state != Message.State.STREAMING:
            return m
        await asyncio.sleep(0.1)
    raise AssertionError("answer did not finish")


async def test_a_turn_streams_and_persists_the_answer_with_stats(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    r = await send(client, cid, "Where is Paris?", max_tokens=24, temperature=0)
    assert r.status_code == 201
    result = r.json()["result"]
    assert result["assistant_message"]["state"] == "streaming"
    events = await sse_events(await client.get(result["stream_url"]))
    assert events[-1][1] == "[DONE]"
    final = json.loads(events[-2][1])
    pieces = "".join(json.loads(d)["response"] for _, d in events[:-2])
    m = await wait_state(result["assistant_message"]["id"])
    assert m.state == "done" and pieces == m.content and m.content.strip()
    assert final["state"] == "done" and final["usage"]["completion_tokens"] == m.completion_tokens
    assert m.time_to_first_token_ms is not None and m.prompt_tokens
    assert int(events[-2][0]) == len(m.content)  # ids are character offsets
    c = await Conversation.objects.aget(pk=cid)
    assert c.title == "Where is Paris?"
    await background.drain_background()
    assert await UsageRecord.objects.filter(endpoint="chat").acount() == 1


async def test_reconnecting_with_last_event_id_resumes_exactly(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    result = (await send(client, cid, "Write a poem about rivers.", max_tokens=60, temperature=0)).json()["result"]
    m = await wait_state(result["assistant_message"]["id"])
    cut = len(m.content) // 2
    events = await sse_events(await client.get(result["stream_url"], headers={"Last-Event-ID": str(cut)}))
    resumed = "".join(json.loads(d)["response"] for _, d in events[:-2])
    assert m.content[:cut] + resumed == m.content


async def test_a_follower_attached_mid_answer_sees_it_continue_to_the_end(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    result = (await send(client, cid, "Write a long story about a lighthouse.", max_tokens=80)).json()["result"]
    await asyncio.sleep(1.0)  # mid-answer
    events = await sse_events(await client.get(result["stream_url"]))
    text = "".join(json.loads(d)["response"] for _, d in events[:-2])
    m = await wait_state(result["assistant_message"]["id"])
    assert text == m.content and json.loads(events[-2][1])["state"] == "done"


async def test_stop_cancels_on_the_server_and_keeps_the_partial_answer(client, loaded) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    result = (await send(client, cid, "Write a very long essay about the sea.", max_tokens=400)).json()["result"]
    mid = result["assistant_message"]["id"]
    for _ in range(100):
        if len((await Message.objects.aget(pk=mid)).content) > 10 or loaded.num_running and _ > 20:
            break
        await asyncio.sleep(0.1)
    r = await client.post(f"/api/conversations/{cid}/messages/{mid}/stop")
    assert r.status_code == 200
    m = await wait_state(mid, timeout=10)
    assert m.state == "stopped" and m.completion_tokens < 400
    assert loaded.num_running == 0
    events = await sse_events(await client.get(result["stream_url"]))
    assert json.loads(events[-2][1])["state"] == "stopped" and events[-1][1] == "[DONE]"


async def test_a_second_turn_while_streaming_is_refused_with_409(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    first = (await send(client, cid, "Tell me a long story.", max_tokens=200)).json()["result"]
    r = await send(client, cid, "And another one")
    assert r.status_code == 409
    await client.post(f"/api/conversations/{cid}/messages/{first['assistant_message']['id']}/stop")
    await wait_state(first["assistant_message"]["id"])
    assert await Message.objects.filter(conversation_id=cid).acount() == 2  # nothing half-written


async def test_another_users_conversation_answers_404(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    result = (await send(client, cid, "hello", max_tokens=4)).json()["result"]

    def other() -> str:
        bob = get_user_model().objects.create_user("bob", password="pw-bob-12345")
        return ApiToken.issue(bob, "bob")[1]
    bob = BearerClient(await sync_to_async(other)())
    mid = result["assistant_message"]["id"]
    assert (await bob.get(f"/api/conversations/{cid}")).status_code == 404
    assert (await bob.get(result["stream_url"])).status_code == 404
    assert (await send(bob, cid, "mine now")).status_code == 404
    assert (await bob.post(f"/api/conversations/{cid}/messages/{mid}/stop")).status_code == 404
    assert (await bob.get("/api/conversations")).json()["result"] == []
    browser = AsyncClient()
    await browser.alogin(username="bob", password="pw-bob-12345")
    assert (await browser.get(f"/c/{cid}")).status_code == 404
    await wait_state(mid)


async def test_session_posts_need_the_csrf_token(api_token) -> None:  # type: ignore[no-untyped-def]
    browser = AsyncClient(enforce_csrf_checks=True)
    await browser.alogin(username="alice", password="pw-alice-123")
    page = await browser.get("/")
    assert page.status_code == 200
    csrf = page.cookies["csrftoken"].value
    r = await browser.post("/api/conversations", "{}", content_type="application/json")
    assert r.status_code == 403
    r = await browser.post("/api/conversations", "{}", content_type="application/json", headers={"X-CSRFToken": csrf})
    assert r.status_code == 201


async def test_the_page_requires_login() -> None:
    r = await AsyncClient().get("/")
    assert r.status_code == 302 and r["Location"].startswith("/accounts/login/")


async def test_a_message_too_long_for_the_context_is_413_and_saves_nothing(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    r = await send(client, cid, "word " * 7000)
    assert r.status_code == 413 and r.json()["errors"][0]["code"] == 5021
    assert await Message.objects.filter(conversation_id=cid).acount() == 0


async def test_a_long_conversation_sends_only_what_fits_and_marks_the_rest(client, loaded) -> None:  # type: ignore[no-untyped-def]
    await CatalogEntry.objects.filter(name=MODEL).aupdate(context_length=160)
    cid = await new_conversation(client, system_prompt="You are a pirate named Zed.")
    conversation = await Conversation.objects.aget(pk=cid)
    for i in range(6):  # an old dialogue, each turn ~25 tokens
        await Message.objects.acreate(conversation=conversation, role="user",
                                      content=f"Question {i}: tell me about ships number {i}.")
        await Message.objects.acreate(conversation=conversation, role="assistant",
                                      content=f"Answer {i}: ship {i} sails the sea.")
    r = await send(client, cid, "What is your name?", max_tokens=32, temperature=0)
    assert r.status_code == 201, r.content
    result = r.json()["result"]
    assert result["assistant_message"]["prompt_tokens"] <= 160 - 32
    await wait_state(result["assistant_message"]["id"])
    messages = [m async for m in Message.objects.filter(conversation_id=cid).order_by("created_at", "id")]
    flags = [m.in_context for m in messages[:-2]]
    assert flags[0] is False and flags[-1] is True
    assert flags == sorted(flags)  # the oldest are out, the newest in
    first_in = flags.index(True)
    assert messages[first_in].role == "user"  # the kept window starts with a user turn
    # the prompt really is system prompt + the kept messages
    history = [{"role": m.role, "content": m.content} for m in messages[:-1]]
    fitted = loaded.fit_history("You are a pirate named Zed.", history, 160 - 32)
    prompt = loaded.tokenizer.decode(fitted.token_ids)
    assert "pirate named Zed" in prompt and "What is your name?" in prompt and "Question 0" not in prompt
    assert fitted.first_included == first_in


async def test_an_answer_orphaned_by_a_restart_is_finished_not_left_streaming(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    conversation = await Conversation.objects.aget(pk=cid)
    await Message.objects.acreate(conversation=conversation, role="user", content="hello")
    orphan = await Message.objects.acreate(conversation=conversation, role="assistant", content="Hal",
                                           state=Message.State.STREAMING)  # no process generates it
    events = await sse_events(await client.get(f"/api/conversations/{cid}/messages/{orphan.pk}/stream"))
    assert json.loads(events[0][1])["response"] == "Hal"
    assert json.loads(events[-2][1])["state"] == "stopped" and events[-1][1] == "[DONE]"
    r = await send(client, cid, "Are you there?", max_tokens=4)
    assert r.status_code == 201  # the conversation is usable again
    await wait_state(r.json()["result"]["assistant_message"]["id"])


async def test_a_refused_turn_changes_nothing(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client, system_prompt="Original.")
    r = await send(client, cid, "word " * 7000, system_prompt="Changed.")
    assert r.status_code == 413
    assert (await Conversation.objects.aget(pk=cid)).system_prompt == "Original."
