"""Chat turns: persisted answers, stop, re-attach, ownership, and the context rule."""
from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from chat import background
from chat.models import ApiToken, CatalogEntry, Conversation, Message, UsageRecord
from tests.support import MODEL
from tests.support.api import BearerClient, new_conversation, send
from tests.support.sse import read_sse

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model, pytest.mark.usefixtures("loaded")]


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
    events = await read_sse(await client.get(result["stream_url"]))
    assert events[-1].done
    final = events[-2].json()
    pieces = "".join(e.json()["response"] for e in events[:-2])
    m = await wait_state(result["assistant_message"]["id"])
    assert m.state == "done" and pieces == m.content and m.content.strip()
    assert final["state"] == "done" and final["usage"]["completion_tokens"] == m.completion_tokens
    assert m.time_to_first_token_ms is not None and m.prompt_tokens
    assert int(events[-2].id) == len(m.content)  # ids are character offsets
    c = await Conversation.objects.aget(pk=cid)
    assert c.title == "Where is Paris?"
    await background.drain_background()
    assert await UsageRecord.objects.filter(endpoint="chat").acount() == 1


async def test_reconnecting_with_last_event_id_resumes_exactly(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    result = (await send(client, cid, "Write a poem about rivers.", max_tokens=60, temperature=0)).json()["result"]
    m = await wait_state(result["assistant_message"]["id"])
    cut = len(m.content) // 2
    events = await read_sse(await client.get(result["stream_url"], headers={"Last-Event-ID": str(cut)}))
    resumed = "".join(e.json()["response"] for e in events[:-2])
    assert m.content[:cut] + resumed == m.content


async def test_a_follower_attached_mid_answer_sees_it_continue_to_the_end(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    result = (await send(client, cid, "Write a long story about a lighthouse.", max_tokens=80)).json()["result"]
    await asyncio.sleep(1.0)  # mid-answer
    events = await read_sse(await client.get(result["stream_url"]))
    text = "".join(e.json()["response"] for e in events[:-2])
    m = await wait_state(result["assistant_message"]["id"])
    assert text == m.content and events[-2].json()["state"] == "done"


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
    events = await read_sse(await client.get(result["stream_url"]))
    assert events[-2].json()["state"] == "stopped" and events[-1].done


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


async def test_a_message_too_long_for_the_context_is_413_and_saves_nothing(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    r = await send(client, cid, "word " * 7000)
    assert r.status_code == 413 and r.json()["errors"][0]["code"] == 5021
    assert await Message.objects.filter(conversation_id=cid).acount() == 0


async def test_a_long_conversation_sends_only_what_fits_and_marks_the_rest(client, loaded) -> None:  # type: ignore[no-untyped-def]
    await CatalogEntry.objects.filter(name=MODEL).aupdate(context_length=160)
    cid = await new_conversation(client, system_prompt="You are a pirate named Zed.")
    conversation = await Conversation.objects.aget(pk=cid)
    parent = None
    for i in range(6):  # an old dialogue, each turn ~25 tokens
        question = await Message.objects.acreate(conversation=conversation, role="user", parent=parent,
                                                 content=f"Question {i}: tell me about ships number {i}.")
        parent = await Message.objects.acreate(conversation=conversation, role="assistant", parent=question,
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
    hello = await Message.objects.acreate(conversation=conversation, role="user", content="hello")
    orphan = await Message.objects.acreate(conversation=conversation, role="assistant", content="Hal", parent=hello,
                                           state=Message.State.STREAMING)  # no process generates it
    events = await read_sse(await client.get(f"/api/conversations/{cid}/messages/{orphan.pk}/stream"))
    assert events[0].json()["response"] == "Hal"
    assert events[-2].json()["state"] == "stopped" and events[-1].done
    r = await send(client, cid, "Are you there?", max_tokens=4)
    assert r.status_code == 201  # the conversation is usable again
    await wait_state(r.json()["result"]["assistant_message"]["id"])


async def test_a_refused_turn_changes_nothing(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client, system_prompt="Original.")
    r = await send(client, cid, "word " * 7000, system_prompt="Changed.")
    assert r.status_code == 413
    assert (await Conversation.objects.aget(pk=cid)).system_prompt == "Original."
