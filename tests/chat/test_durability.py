"""No answer lost: one turn at a time is the database's rule, an answer outlives database
errors, and an answer cut by a crash or restart is taken over by one process and resumed
where it stopped."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, OperationalError
from django.db.models import QuerySet
from django.utils import timezone

from chat import leases, turns
from chat.models import Conversation, Message
from inference import SamplingParams
from tests.support import MODEL
from tests.support.api import native_error, new_conversation, send
from tests.support.sse import read_sse

pytestmark = pytest.mark.django_db(transaction=True)
PARTIAL = "The old lighthouse stood on the cliff, and every night its keeper"


def ended_worker() -> str:
    """The worker id of a process of this host that has ended (as after ``kill -9``)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return f"{leases.HOST}:{process.pid}:dead"


async def orphan(content: str = PARTIAL, max_tokens: int = 40, **fields: Any) -> Message:
    """An answer left streaming by a process that is gone (a crash or a restart), its
    lease not run out yet."""
    owner = await get_user_model().objects.aget(username="alice")
    conversation = await Conversation.objects.acreate(owner=owner, model=MODEL)
    question = await Message.objects.acreate(conversation=conversation, role="user",
                                             content="Write a long story about a lighthouse keeper.")
    values = {"worker": ended_worker(), "lease_expires": timezone.now() + leases.LEASE, **fields}
    return await Message.objects.acreate(
        conversation=conversation, parent=question, role="assistant", content=content,
        state=Message.State.STREAMING, model=MODEL,
        sampling=dataclasses.asdict(SamplingParams(max_tokens=max_tokens, temperature=0)), **values)


def stream_url(m: Message) -> str:
    return f"/api/conversations/{m.conversation_id}/messages/{m.pk}/stream"


async def finished(client: Any, message_id: int) -> Message:
    """The answer once its stream (as the page follows it) has ended."""
    m = await Message.objects.aget(pk=message_id)
    await read_sse(await client.get(stream_url(m)))
    return await Message.objects.aget(pk=message_id)


async def last_answer(conversation_id: int) -> int:
    return (await Message.objects.filter(conversation_id=conversation_id, role="assistant").alatest("id")).pk


async def test_the_database_refuses_a_second_streaming_answer_in_one_conversation(api_token) -> None:  # type: ignore[no-untyped-def]
    streaming = await orphan()
    with pytest.raises(IntegrityError):
        await Message.objects.acreate(conversation_id=streaming.conversation_id, role="assistant",
                                      state=Message.State.STREAMING)
    await Message.objects.acreate(conversation_id=streaming.conversation_id, role="assistant", content="an old one")


@pytest.mark.model
async def test_two_simultaneous_turns_start_one_and_refuse_the_other_with_409(client, loaded) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    responses = await asyncio.gather(send(client, cid, "Tell me a long story.", max_tokens=200),
                                     send(client, cid, "Tell me a long joke.", max_tokens=200))
    assert sorted(r.status_code for r in responses) == [201, 409]
    started, refused = sorted(responses, key=lambda r: r.status_code)
    assert native_error(refused) == (409, 5004)
    assert "still streaming" in refused.json()["errors"][0]["message"]
    assert await Message.objects.filter(conversation_id=cid).acount() == 2  # nothing of the refused turn
    mid = started.json()["result"]["assistant_message"]["id"]
    await client.post(f"/api/conversations/{cid}/messages/{mid}/stop")
    await finished(client, mid)


@pytest.mark.model
async def test_database_errors_while_an_answer_is_saved_do_not_leave_it_streaming(
        client, loaded, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    update = QuerySet.aupdate
    failed = {"saves": 0, "end": 0}

    async def flaky(self: QuerySet[Any], **fields: Any) -> int:
        if self.model is Message and "content" in fields:
            if "state" not in fields:  # every save of the growing answer fails
                failed["saves"] += 1
                raise OperationalError("database is locked")
            if not failed["end"]:  # and so does the first try of its end
                failed["end"] += 1
                raise OperationalError("database is locked")
        return await update(self, **fields)

    monkeypatch.setattr(QuerySet, "aupdate", flaky)
    cid = await new_conversation(client)
    result = (await send(client, cid, "Write a poem about rivers.", max_tokens=60, temperature=0)).json()["result"]
    events = await read_sse(await client.get(result["stream_url"]))
    m = await Message.objects.aget(pk=result["assistant_message"]["id"])
    assert failed["saves"] and failed["end"]
    assert m.state == "done" and m.content and m.worker == ""
    assert "".join(e.json()["response"] for e in events[:-2]) == m.content
    assert events[-2].json()["state"] == "done" and events[-1].done
    assert (await send(client, cid, "Thanks!", max_tokens=4)).status_code == 201  # the conversation goes on
    await finished(client, await last_answer(cid))


@pytest.mark.model
async def test_an_error_while_answering_finishes_the_answer_and_keeps_its_text(
        client, loaded, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from channels.layers import InMemoryChannelLayer

    group_send = InMemoryChannelLayer.group_send
    pieces = 0

    async def broken(self: InMemoryChannelLayer, group: str, message: dict[str, Any]) -> None:
        nonlocal pieces
        if message["type"] == "piece":
            pieces += 1
            if pieces > 8:
                raise ConnectionError("channel layer went away")
        await group_send(self, group, message)

    monkeypatch.setattr(InMemoryChannelLayer, "group_send", broken)
    cid = await new_conversation(client)
    result = (await send(client, cid, "Write a long story about the sea.", max_tokens=200)).json()["result"]
    m = await finished(client, result["assistant_message"]["id"])
    assert m.state == "error" and "channel layer went away" in m.error and m.content
    assert (await send(client, cid, "Again?", max_tokens=4)).status_code == 201
    await finished(client, await last_answer(cid))


async def test_only_one_claim_takes_over_an_orphaned_answer(api_token) -> None:  # type: ignore[no-untyped-def]
    m = await orphan()
    won = await asyncio.gather(*(leases.claim(m.pk) for _ in range(5)))
    assert won.count(True) == 1
    m = await Message.objects.aget(pk=m.pk)
    assert m.worker == leases.WORKER and m.lease_expires > timezone.now()


@pytest.mark.parametrize("worker", [f"{leases.HOST}:{os.getppid()}:alive", "another-host:4242:unknown"])
async def test_an_answer_whose_process_may_live_is_taken_over_once_its_lease_ran_out(
        api_token, monkeypatch, worker: str) -> None:  # type: ignore[no-untyped-def]
    m = await orphan(worker=worker)
    assert not await leases.claim(m.pk)  # its process may still be renewing the lease
    await Message.objects.filter(pk=m.pk).aupdate(lease_expires=timezone.now() - timedelta(seconds=1))
    monkeypatch.setattr(leases, "WORKER", f"{leases.HOST}:{os.getppid()}:a")  # a live process
    assert await leases.claim(m.pk)
    monkeypatch.setattr(leases, "WORKER", "another-host:1:b")
    assert not await leases.claim(m.pk)
    assert (await Message.objects.aget(pk=m.pk)).worker.endswith(":a")


@pytest.mark.model
async def test_an_answer_cut_by_a_restart_is_resumed_where_it_stopped(client, loaded) -> None:  # type: ignore[no-untyped-def]
    m = await orphan(max_tokens=40)
    events = await read_sse(await client.get(stream_url(m)))
    assert events[0].json()["response"].startswith(PARTIAL)
    assert events[-2].json()["state"] == "done" and events[-1].done
    resumed = await Message.objects.aget(pk=m.pk)
    assert resumed.state == "done" and resumed.error == "" and resumed.worker == ""
    assert resumed.content.startswith(PARTIAL) and len(resumed.content) > len(PARTIAL)
    assert "".join(e.json()["response"] for e in events[:-2]) == resumed.content
    assert resumed.completion_tokens is not None and resumed.completion_tokens <= 40  # the tokens it had left


@pytest.mark.model
async def test_the_sweep_at_server_start_resumes_every_interrupted_answer(client, loaded) -> None:  # type: ignore[no-untyped-def]
    first, second = await orphan(), await orphan(content="")
    await turns.resume_orphans()
    assert await Message.objects.filter(worker=leases.WORKER, state="streaming").acount() == 2  # taken over here
    for m in (first, second):
        resumed = await finished(client, m.pk)
        assert resumed.state == "done" and resumed.content.startswith(m.content)
        assert len(resumed.content) > len(m.content)


@pytest.mark.model
async def test_an_answer_that_had_used_its_tokens_ends_without_generating(client, loaded) -> None:  # type: ignore[no-untyped-def]
    m = await orphan(max_tokens=3)
    await turns.resume_orphans()
    done = await finished(client, m.pk)
    assert (done.state, done.finish_reason, done.content) == ("done", "length", PARTIAL)


async def test_stopping_an_orphaned_answer_stops_it_here(client, no_engine) -> None:  # type: ignore[no-untyped-def]
    m = await orphan()
    r = await client.post(f"/api/conversations/{m.conversation_id}/messages/{m.pk}/stop")
    assert r.status_code == 200
    stopped = await Message.objects.aget(pk=m.pk)
    assert (stopped.state, stopped.content, stopped.error) == ("stopped", PARTIAL, "")
