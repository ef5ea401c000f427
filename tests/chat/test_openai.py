"""The OpenAI-compatible API (/v1/...) through Django's async test client: shapes, streaming,
errors that need the model. Refusals that need no model are in ``test_validation.py``."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from chat import background
from chat.models import UsageRecord
from inference.errors import QueueFull
from tests.support import MODEL
from tests.support.api import CHAT_URL, TEXT_URL, chat_body, openai_error, post_json
from tests.support.sse import read_sse

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model, pytest.mark.usefixtures("loaded")]


async def read_chunks(response) -> list[Any]:  # type: ignore[no-untyped-def]
    """The SSE events' data: decoded JSON, with the final ``[DONE]`` kept as a string."""
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    events = await read_sse(response)
    assert all(e.data_only for e in events), events
    return [e.data if e.done else e.json() for e in events]


# chat completions ---------------------------------------------------------------------
async def test_chat_answers_in_the_chat_completion_shape(client) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, CHAT_URL, chat_body(max_tokens=12, temperature=0))
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion" and body["model"] == MODEL
    assert abs(body["created"] - time.time()) < 60
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_a_cut_off_answer_finishes_with_length(client, field) -> None:  # type: ignore[no-untyped-def]
    ask = chat_body("Tell me a long story about a dragon.", temperature=0, **{field: 3})
    body = (await post_json(client, CHAT_URL, ask)).json()
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 3



async def test_min_tokens_keeps_a_short_answer_going(client) -> None:  # type: ignore[no-untyped-def]
    ask = chat_body("Say hello.", temperature=0, max_tokens=80)
    natural = (await post_json(client, CHAT_URL, ask)).json()
    assert natural["choices"][0]["finish_reason"] == "stop", "use a prompt the model answers briefly"
    n = natural["usage"]["completion_tokens"] + 20
    longer = (await post_json(client, CHAT_URL, {**ask, "min_tokens": n})).json()
    assert longer["usage"]["completion_tokens"] >= n

async def test_text_content_parts_and_developer_role_are_understood(client) -> None:  # type: ignore[no-untyped-def]
    plain = {"model": MODEL, "max_tokens": 6, "temperature": 0,
             "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]}
    parts = {**plain, "messages": [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                                   {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                                {"type": "text", "text": "there"}]}]}
    a, b = [(await post_json(client, CHAT_URL, body)).json() for body in (plain, parts)]
    assert a["usage"] == b["usage"] and a["choices"][0]["message"] == b["choices"][0]["message"]


async def test_streamed_chat_matches_the_plain_answer_and_ends_with_usage_and_done(client) -> None:  # type: ignore[no-untyped-def]
    body = chat_body("Where is Paris? ünïcode ✓", max_tokens=20, seed=3, temperature=0.8)
    plain = (await post_json(client, CHAT_URL, body)).json()
    r = await post_json(client, CHAT_URL, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r["Cache-Control"] == "no-cache"
    chunks = await read_chunks(r)
    assert chunks[-1] == "[DONE]"
    *content, closing, usage = chunks[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == content[0]["id"] for c in content)
    assert content[0]["id"].startswith("chatcmpl-")
    assert content[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["choices"][0]["finish_reason"] is None and c["usage"] is None for c in content)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in content)
    assert text == plain["choices"][0]["message"]["content"] and len(content) > 3
    assert closing["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert closing["choices"][0]["delta"] == {}
    assert usage["choices"] == [] and usage["usage"] == plain["usage"]


async def test_streamed_chat_sends_no_usage_unless_asked(client) -> None:  # type: ignore[no-untyped-def]
    chunks = await read_chunks(await post_json(client, CHAT_URL, chat_body(max_tokens=4, stream=True)))
    assert chunks[-1] == "[DONE]"
    assert all("usage" not in c and len(c["choices"]) == 1 for c in chunks[:-1])


async def test_stop_sequence_ends_the_answer_before_it(client) -> None:  # type: ignore[no-untyped-def]
    body = chat_body("Name five colors of the rainbow.", max_tokens=12, temperature=0)
    full = (await post_json(client, CHAT_URL, body)).json()["choices"][0]["message"]["content"]
    words = full.split()
    assert len(words) >= 4, full
    stop = " " + words[2]
    expected = full[: full.index(stop)]
    plain = (await post_json(client, CHAT_URL, {**body, "stop": [stop, "@@never@@"]})).json()
    assert plain["choices"][0]["message"]["content"] == expected
    assert plain["choices"][0]["finish_reason"] == "stop"
    chunks = await read_chunks(await post_json(client, CHAT_URL, {**body, "stop": stop, "stream": True}))
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert streamed == expected and stop not in streamed
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_openai_fields_reach_the_engine_with_openai_defaults(client, loaded, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen = []
    submit = loaded.submit

    def spy(ids, params, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(params)
        return submit(ids, params, **kwargs)

    monkeypatch.setattr(loaded, "submit", spy)
    await post_json(client, CHAT_URL, chat_body(max_tokens=2))
    await post_json(client, CHAT_URL, chat_body(max_completion_tokens=3, temperature=0.2, top_p=0.5, seed=7, stop="x",
                                                frequency_penalty=0.5, presence_penalty=-0.5, n=1))
    await post_json(client, TEXT_URL, {"model": MODEL, "prompt": "Once upon"})
    default, custom, text = seen
    assert default.temperature == 1.0 and default.max_tokens == 2
    assert (custom.max_tokens, custom.temperature, custom.top_p, custom.seed, custom.stop) == (3, 0.2, 0.5, 7, ("x",))
    assert (custom.frequency_penalty, custom.presence_penalty) == (0.5, -0.5)
    assert text.max_tokens == 16 and text.temperature == 1.0


# text completions ---------------------------------------------------------------------
async def test_text_completion_uses_the_raw_prompt(client) -> None:  # type: ignore[no-untyped-def]
    body = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
    r = await post_json(client, TEXT_URL, body)
    assert r.status_code == 200
    answer = r.json()
    assert answer["id"].startswith("cmpl-") and answer["object"] == "text_completion" and answer["model"] == MODEL
    (choice,) = answer["choices"]
    assert choice["text"] and choice["finish_reason"] in ("stop", "length")
    templated = (await post_json(client, CHAT_URL, chat_body("The capital of France is", max_tokens=1))).json()
    assert answer["usage"]["prompt_tokens"] < templated["usage"]["prompt_tokens"]
    as_list = (await post_json(client, TEXT_URL, {**body, "prompt": ["The capital of France is"]})).json()
    assert as_list["choices"][0]["text"] == choice["text"]


async def test_streamed_text_completion_in_text_completion_chunks(client) -> None:  # type: ignore[no-untyped-def]
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
    plain = (await post_json(client, TEXT_URL, body)).json()
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    chunks = await read_chunks(await post_json(client, TEXT_URL, streamed))
    assert chunks[-1] == "[DONE]"
    *content, closing, usage = chunks[:-1]
    assert all(c["object"] == "text_completion" and c["id"].startswith("cmpl-") for c in chunks[:-1])
    assert "".join(c["choices"][0]["text"] for c in content) == plain["choices"][0]["text"]
    assert closing["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert usage["choices"] == [] and usage["usage"] == plain["usage"]


@pytest.mark.parametrize("url, body", [(CHAT_URL, chat_body("hello " * 7000)),
                                       (TEXT_URL, {"model": MODEL, "prompt": "hello " * 7000})])
async def test_prompt_longer_than_the_context_is_400_context_length_exceeded(client, url, body) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, url, body)
    error = openai_error(r)
    assert r.status_code == 400 and error["code"] == "context_length_exceeded"
    assert "context length is 6144 tokens" in error["message"]
    assert error["param"] == ("messages" if url == CHAT_URL else "prompt")


async def test_full_queue_is_429_with_retry_after(client, loaded, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise QueueFull(retry_after=2)
    monkeypatch.setattr(loaded, "submit", full)
    r = await post_json(client, CHAT_URL, chat_body())
    assert r.status_code == 429 and r["Retry-After"] == "2" and openai_error(r)["code"] == "server_overloaded"


# bookkeeping --------------------------------------------------------------------------
async def test_usage_is_recorded_as_openai(client) -> None:  # type: ignore[no-untyped-def]
    usage = (await post_json(client, CHAT_URL, chat_body(max_tokens=3))).json()["usage"]
    await background.drain_background()
    record = await UsageRecord.objects.select_related("token").alatest("created_at")
    assert record.token is not None and record.endpoint == "openai" and record.model == MODEL
    assert (record.prompt_tokens, record.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])


async def test_a_client_leaving_mid_stream_aborts_generation(client, loaded) -> None:  # type: ignore[no-untyped-def]
    body = chat_body("Write a very long story about a dragon.", max_tokens=400, stream=True)
    r = await post_json(client, CHAT_URL, body)
    content = r.streaming_content
    got_piece = asyncio.Event()

    async def consume() -> None:  # what Django's ASGI handler does until the client disconnects
        async for chunk in content:
            if b'"content": "' in chunk and b'"content": ""' not in chunk:
                got_piece.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_piece.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await background.drain_background()
    record = await UsageRecord.objects.alatest("created_at")
    assert record.finish_reason == "abort" and record.completion_tokens < 400
    assert loaded.num_running == 0
