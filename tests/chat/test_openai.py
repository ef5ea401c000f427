"""The OpenAI-compatible API (/v1/...) through Django's async test client: shapes, streaming, errors."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from django.test import AsyncClient, override_settings

from chat import background
from chat.models import ApiToken, CatalogEntry, UsageRecord
from inference import pool
from inference.errors import QueueFull
from tests.chat.conftest import BearerClient

MODEL = "@cf/huggingfacetb/smollm2-135m-instruct"
CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model]


async def post(client: AsyncClient, body: object, url: str = CHAT):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return await client.post(url, data, content_type="application/json")


def chat(content: str = "Where is Paris?", **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


def openai_error(response) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}, body
    return body["error"]


async def read_chunks(response) -> list[Any]:  # type: ignore[no-untyped-def]
    """The SSE events' data: decoded JSON, with the final ``[DONE]`` kept as a string."""
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    text = b"".join([c async for c in response.streaming_content]).decode()
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), events
    return [e[6:] if e == "data: [DONE]" else json.loads(e[6:]) for e in events]


@pytest.fixture(autouse=True)
def loaded(engine):  # type: ignore[no-untyped-def]
    pool.set(MODEL, engine)
    return engine


# /v1/models ---------------------------------------------------------------------------
async def test_models_lists_enabled_catalog_entries_by_name(client) -> None:  # type: ignore[no-untyped-def]
    await CatalogEntry.objects.filter(name="@cf/meta/llama-2-7b-chat-fp16").aupdate(is_enabled=False)
    r = await client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    models = {m["id"]: m for m in body["data"]}
    assert MODEL in models and "@cf/meta/llama-2-7b-chat-int8" in models
    assert "@cf/meta/llama-2-7b-chat-fp16" not in models
    assert models[MODEL]["object"] == "model" and models[MODEL]["owned_by"] == "huggingfacetb"
    assert abs(models[MODEL]["created"] - time.time()) < 3600


async def test_models_needs_a_token(api_token) -> None:  # type: ignore[no-untyped-def]
    r = await BearerClient(authorization="Bearer wai_wrong_wrong").get("/v1/models")
    assert r.status_code == 401 and openai_error(r)["code"] == "invalid_api_key"


# chat completions ---------------------------------------------------------------------
async def test_chat_answers_in_the_chat_completion_shape(client) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, chat(max_tokens=12, temperature=0))
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
    body = (await post(client, chat("Tell me a long story about a dragon.", temperature=0, **{field: 3}))).json()
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 3


async def test_text_content_parts_and_developer_role_are_understood(client) -> None:  # type: ignore[no-untyped-def]
    plain = {"model": MODEL, "max_tokens": 6, "temperature": 0,
             "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]}
    parts = {**plain, "messages": [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                                   {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                                {"type": "text", "text": "there"}]}]}
    a, b = [(await post(client, body)).json() for body in (plain, parts)]
    assert a["usage"] == b["usage"] and a["choices"][0]["message"] == b["choices"][0]["message"]


async def test_streamed_chat_matches_the_plain_answer_and_ends_with_usage_and_done(client) -> None:  # type: ignore[no-untyped-def]
    body = chat("Where is Paris? ünïcode ✓", max_tokens=20, seed=3, temperature=0.8)
    plain = (await post(client, body)).json()
    r = await post(client, {**body, "stream": True, "stream_options": {"include_usage": True}})
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
    chunks = await read_chunks(await post(client, chat(max_tokens=4, stream=True)))
    assert chunks[-1] == "[DONE]"
    assert all("usage" not in c and len(c["choices"]) == 1 for c in chunks[:-1])


async def test_stop_sequence_ends_the_answer_before_it(client) -> None:  # type: ignore[no-untyped-def]
    body = chat("Name five colors of the rainbow.", max_tokens=12, temperature=0)
    full = (await post(client, body)).json()["choices"][0]["message"]["content"]
    words = full.split()
    assert len(words) >= 4, full
    stop = " " + words[2]
    expected = full[: full.index(stop)]
    plain = (await post(client, {**body, "stop": [stop, "@@never@@"]})).json()
    assert plain["choices"][0]["message"]["content"] == expected
    assert plain["choices"][0]["finish_reason"] == "stop"
    chunks = await read_chunks(await post(client, {**body, "stop": stop, "stream": True}))
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
    await post(client, chat(max_tokens=2))
    await post(client, chat(max_completion_tokens=3, temperature=0.2, top_p=0.5, seed=7, stop="x",
                            frequency_penalty=0.5, presence_penalty=-0.5, n=1))
    await post(client, {"model": MODEL, "prompt": "Once upon"}, url=TEXT)
    default, custom, text = seen
    assert default.temperature == 1.0 and default.max_tokens == 2
    assert (custom.max_tokens, custom.temperature, custom.top_p, custom.seed, custom.stop) == (3, 0.2, 0.5, 7, ("x",))
    assert (custom.frequency_penalty, custom.presence_penalty) == (0.5, -0.5)
    assert text.max_tokens == 16 and text.temperature == 1.0


# text completions ---------------------------------------------------------------------
async def test_text_completion_uses_the_raw_prompt(client) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0},
                   url=TEXT)
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion" and body["model"] == MODEL
    (choice,) = body["choices"]
    assert choice["text"] and choice["finish_reason"] in ("stop", "length")
    templated = (await post(client, chat("The capital of France is", max_tokens=1))).json()
    assert body["usage"]["prompt_tokens"] < templated["usage"]["prompt_tokens"]
    as_list = (await post(client, {"model": MODEL, "prompt": ["The capital of France is"], "max_tokens": 4,
                                   "temperature": 0}, url=TEXT)).json()
    assert as_list["choices"][0]["text"] == choice["text"]


async def test_streamed_text_completion_in_text_completion_chunks(client) -> None:  # type: ignore[no-untyped-def]
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
    plain = (await post(client, body, url=TEXT)).json()
    chunks = await read_chunks(await post(client, {**body, "stream": True, "stream_options": {"include_usage": True}},
                                          url=TEXT))
    assert chunks[-1] == "[DONE]"
    *content, closing, usage = chunks[:-1]
    assert all(c["object"] == "text_completion" and c["id"].startswith("cmpl-") for c in chunks[:-1])
    assert "".join(c["choices"][0]["text"] for c in content) == plain["choices"][0]["text"]
    assert closing["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert usage["choices"] == [] and usage["usage"] == plain["usage"]


# errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("authorization", [None, "Bearer wai_nope_nope", "Basic abc"])
async def test_missing_or_bad_key_is_401_invalid_api_key(api_token, authorization) -> None:  # type: ignore[no-untyped-def]
    r = await post(BearerClient(authorization=authorization), chat())
    error = openai_error(r)
    assert r.status_code == 401 and (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")


@pytest.mark.parametrize("url", [CHAT, TEXT])
async def test_unknown_model_is_404_model_not_found(client, url) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "@cf/nobody/nothing", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}
    r = await post(client, body, url=url)
    error = openai_error(r)
    assert r.status_code == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    assert "@cf/nobody/nothing" in error["message"]


async def test_listed_but_unavailable_model_is_503_and_not_worth_retrying(client) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, {**chat(), "model": "@cf/meta/llama-2-7b-chat-fp16"})
    error = openai_error(r)
    assert r.status_code == 503 and error["code"] == "model_unavailable" and "weights not found" in error["message"]
    assert r["x-should-retry"] == "false"


@pytest.mark.parametrize("body, param", [
    ("{not json", None),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    (chat(n=2), "n"),
    (chat(temperature=9), "temperature"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=999999), "max_tokens"),
    (chat(max_tokens=5, max_completion_tokens=5), "max_tokens"),
    (chat(top_p=0), "top_p"),
    (chat(seed="x"), "seed"),
    (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
    (chat(stream="yes"), "stream"),
    (chat(stream_options={"include_usage": True}), "stream_options"),
    (chat(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
    (chat(logprobs=True), "logprobs"),
    (chat(response_format={"type": "json_object"}), "response_format"),
    ({"model": MODEL, "messages": []}, "messages"),
    ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
])
async def test_invalid_chat_request_is_400_naming_the_param(client, body, param) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, body)
    error = openai_error(r)
    assert r.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == param, error


@pytest.mark.parametrize("body, param", [
    ({"model": MODEL}, "prompt"),
    ({"model": MODEL, "prompt": ""}, "prompt"),
    ({"model": MODEL, "prompt": ["a", "b"]}, "prompt"),
    ({"model": MODEL, "prompt": "a", "echo": True}, "echo"),
    ({"model": MODEL, "prompt": "a", "best_of": 3}, "best_of"),
])
async def test_invalid_text_request_is_400_naming_the_param(client, body, param) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, body, url=TEXT)
    assert r.status_code == 400 and openai_error(r)["param"] == param


@pytest.mark.parametrize("url, body", [(CHAT, chat("hello " * 7000)),
                                       (TEXT, {"model": MODEL, "prompt": "hello " * 7000})])
async def test_prompt_longer_than_the_context_is_400_context_length_exceeded(client, url, body) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, body, url=url)
    error = openai_error(r)
    assert r.status_code == 400 and error["code"] == "context_length_exceeded"
    assert "context length is 6144 tokens" in error["message"]
    assert error["param"] == ("messages" if url == CHAT else "prompt")


@override_settings(API_MAX_BODY_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=4096)
async def test_body_larger_than_the_maximum_is_413(client) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, chat("x" * 3000))
    assert r.status_code == 413 and openai_error(r)["code"] == "request_too_large"


async def test_full_queue_is_429_with_retry_after(client, loaded, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise QueueFull(retry_after=2)
    monkeypatch.setattr(loaded, "submit", full)
    r = await post(client, chat())
    assert r.status_code == 429 and r["Retry-After"] == "2" and openai_error(r)["code"] == "server_overloaded"


async def test_rate_limited_token_gets_429_with_retry_after(api_token) -> None:  # type: ignore[no-untyped-def]
    await ApiToken.objects.aupdate(rate_limit_per_minute=1)
    client = BearerClient(api_token)
    assert (await client.get("/v1/models")).status_code == 200
    r = await post(client, chat(max_tokens=1))
    assert r.status_code == 429 and openai_error(r)["code"] == "rate_limit_exceeded"
    assert 1 <= int(r["Retry-After"]) <= 60


@pytest.mark.parametrize("method, url", [("get", CHAT), ("get", TEXT), ("post", "/v1/models")])
async def test_wrong_method_is_405(client, method, url) -> None:  # type: ignore[no-untyped-def]
    r = await getattr(client, method)(url)
    assert r.status_code == 405 and openai_error(r)["code"] == "method_not_allowed"


# bookkeeping --------------------------------------------------------------------------
async def test_usage_is_recorded_as_openai(client) -> None:  # type: ignore[no-untyped-def]
    usage = (await post(client, chat(max_tokens=3))).json()["usage"]
    await background.drain_background()
    record = await UsageRecord.objects.select_related("token").alatest("created_at")
    assert record.token is not None and record.endpoint == "openai" and record.model == MODEL
    assert (record.prompt_tokens, record.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])


async def test_a_client_leaving_mid_stream_aborts_generation(client, loaded) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, chat("Write a very long story about a dragon.", max_tokens=400, stream=True))
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
