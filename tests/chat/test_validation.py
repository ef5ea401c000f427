"""Requests refused before any model is needed: bad or missing tokens, unknown or unavailable
models, bodies that fail validation, oversized bodies, wrong methods, rate limits; in the native,
OpenAI and chat-turn shapes. No engine is loaded or reached (``no_engine``)."""
from __future__ import annotations

import pytest
from django.test import override_settings

from chat.models import ApiToken, Message
from tests.support import MODEL
from tests.support.api import (
    CHAT_URL,
    NATIVE_URL,
    TEXT_URL,
    BearerClient,
    chat_body,
    native_error,
    new_conversation,
    openai_error,
    post_json,
    send,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_engine")]


# native: /ai/run/<model> ----------------------------------------------------------------
@pytest.mark.parametrize("authorization", [None, "Bearer wai_nope_nope", "Basic abc", "Bearer "])
async def test_missing_or_bad_token_is_401_with_code_10000(api_token, authorization) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(BearerClient(authorization=authorization), NATIVE_URL, {"prompt": "hi"})
    assert native_error(r) == (401, 10000)
    assert r.json()["errors"][0]["message"] == "Authentication error"


async def test_unknown_model_is_400_with_code_5007(client) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, "/ai/run/@cf/nobody/nothing", {"prompt": "hi"})
    assert native_error(r) == (400, 5007)
    assert r.json()["errors"][0]["message"] == "No such model @cf/nobody/nothing or task"


async def test_listed_but_unavailable_model_is_503_with_the_reason(client) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, "/ai/run/@cf/meta/llama-2-7b-chat-fp16", {"prompt": "hi"})
    assert native_error(r) == (503, 5008)
    assert "weights not found" in r.json()["errors"][0]["message"]


@pytest.mark.parametrize("body, field", [
    ("{not json", "JSON"),
    ([1, 2], "object"),
    ({}, "exactly one"),
    ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "exactly one"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user", "content": 3}]}, "content"),
    ({"prompt": "a", "stream": "yes"}, "stream"),
    ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "a", "max_tokens": 999999}, "max_tokens"),
    ({"prompt": "a", "max_tokens": "9"}, "max_tokens"),
    ({"prompt": "a", "temperature": 5.5}, "temperature"),
    ({"prompt": "a", "top_p": 0}, "top_p"),
    ({"prompt": "a", "top_k": 51}, "top_k"),
    ({"prompt": "a", "seed": -1}, "seed"),
    ({"prompt": "a", "repetition_penalty": 2.5}, "repetition_penalty"),
    ({"prompt": "a", "frequency_penalty": -3}, "frequency_penalty"),
    ({"prompt": "a", "presence_penalty": 3}, "presence_penalty"),
    ({"prompt": "a", "raw": 1}, "raw"),
    ({"prompt": "a", "lora": "my-adapter"}, "'lora' is not supported"),
    ({"prompt": "a", "functions": [{"name": "f", "code": "x"}]}, "'functions' is not supported"),
    ({"prompt": "a", "image": [1, 2]}, "'image' is not supported"),
    ({"prompt": "a", "stop_token_ids": [-1]}, "stop_token_ids"),
    ({"prompt": "a", "min_tokens": -1}, "min_tokens"),
    ({"prompt": "a", "min_tokens": "5"}, "min_tokens"),
    ({"prompt": "a", "max_tokens": 8, "min_tokens": 9}, "min_tokens"),
    ({"prompt": "a", "tools": [{"name": "f"}]}, "'tools' need 'messages'"),
    ({"prompt": "a", "response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"prompt": "a", "response_format": {"type": "yaml"}}, "response_format"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"name": "f", "parameters": 3}]},
     "tools[0].parameters"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"name": "f"}, {"name": "f"}]}, "repeats"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"}, "tool_choice"),
])
async def test_invalid_body_is_400_with_code_5004_naming_the_field(client, body, field) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, NATIVE_URL, body)
    assert native_error(r) == (400, 5004)
    assert field in r.json()["errors"][0]["message"]


@pytest.mark.parametrize("field", ["temperature", "top_p", "repetition_penalty", "frequency_penalty"])
@pytest.mark.parametrize("raw_value", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_numbers_are_refused_by_name(client, field: str, raw_value: str) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, NATIVE_URL, f'{{"prompt": "hi", "{field}": {raw_value}}}')
    assert native_error(r) == (400, 5004)
    assert field in r.json()["errors"][0]["message"]


@pytest.mark.parametrize("body, rule", [
    ('{"prompt": "\\ud800"}', "Unicode"),
    ('{"prompt": "a\\u0000b"}', "NUL"),
    ('{"prompt": "hi", "seed": ' + "9" * 5000 + "}", "number too large"),
    ("[" * 100_000, "nested"),
    ('{"prompt": "hi", "x": ' + "[" * 40 + "]" * 40 + "}", "nested"),
])
async def test_bodies_json_allows_but_nothing_can_hold_get_a_400_envelope(client, body: str, rule: str) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, NATIVE_URL, body)
    assert native_error(r) == (400, 5004)
    assert rule in r.json()["errors"][0]["message"]


@override_settings(API_MAX_BODY_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=4096)
async def test_body_larger_than_the_maximum_is_413_with_code_3006(client) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, NATIVE_URL, {"prompt": "x" * 3000})
    assert native_error(r) == (413, 3006)
    assert r.json()["errors"][0]["message"] == "Request is too large"


@pytest.mark.parametrize("method", ["get", "put", "delete"])
async def test_wrong_method_is_405(client, method) -> None:  # type: ignore[no-untyped-def]
    r = await getattr(client, method)(NATIVE_URL)
    assert r.status_code == 405


# OpenAI: /v1/... ----------------------------------------------------------------------------
async def test_models_needs_a_token(api_token) -> None:  # type: ignore[no-untyped-def]
    r = await BearerClient(authorization="Bearer wai_wrong_wrong").get("/v1/models")
    assert r.status_code == 401 and openai_error(r)["code"] == "invalid_api_key"


@pytest.mark.parametrize("authorization", [None, "Bearer wai_nope_nope", "Basic abc"])
async def test_missing_or_bad_key_is_401_invalid_api_key(api_token, authorization) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(BearerClient(authorization=authorization), CHAT_URL, chat_body())
    error = openai_error(r)
    assert r.status_code == 401 and (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")


@pytest.mark.parametrize("url", [CHAT_URL, TEXT_URL])
async def test_unknown_model_is_404_model_not_found(client, url) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "@cf/nobody/nothing", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}
    r = await post_json(client, url, body)
    error = openai_error(r)
    assert r.status_code == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    assert "@cf/nobody/nothing" in error["message"]


async def test_listed_but_unavailable_model_is_503_and_not_worth_retrying(client) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, CHAT_URL, {**chat_body(), "model": "@cf/meta/llama-2-7b-chat-fp16"})
    error = openai_error(r)
    assert r.status_code == 503 and error["code"] == "model_unavailable" and "weights not found" in error["message"]
    assert r["x-should-retry"] == "false"


@pytest.mark.parametrize("body, param", [
    ("{not json", None),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    (chat_body(n=2), "n"),
    (chat_body(temperature=9), "temperature"),
    (chat_body(max_tokens=0), "max_tokens"),
    (chat_body(max_tokens=999999), "max_tokens"),
    (chat_body(max_tokens=5, max_completion_tokens=5), "max_tokens"),
    (chat_body(top_p=0), "top_p"),
    (chat_body(seed="x"), "seed"),
    (chat_body(stop=["a", "b", "c", "d", "e"]), "stop"),
    (chat_body(stream="yes"), "stream"),
    (chat_body(stream_options={"include_usage": True}), "stream_options"),
    (chat_body(tools=[{"type": "function", "function": {"name": "no spaces"}}]), "tools[0].function.name"),
    (chat_body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
     "tools[0].function.parameters"),
    (chat_body(tools=[{"name": "f"}]), "tools[0]"),  # Workers AI's flat shape is native only
    (chat_body(tool_choice="required"), "tool_choice"),
    (chat_body(tools=[{"type": "function", "function": {"name": "f"}}],
               tool_choice={"type": "function", "function": {"name": "g"}}), "tool_choice.function.name"),
    (chat_body(tools=[{"type": "function", "function": {"name": "f"}}], parallel_tool_calls="yes"),
     "parallel_tool_calls"),
    (chat_body(functions=[{"name": "f"}]), "functions"),
    (chat_body(modalities=["text", "audio"]), "modalities"),
    (chat_body(audio={"voice": "alloy", "format": "wav"}), "audio"),
    (chat_body(store=True), "store"),
    (chat_body(prediction={"type": "content", "content": "x"}), "prediction"),
    (chat_body(web_search_options={}), "web_search_options"),
    (chat_body(reasoning_effort="high"), "reasoning_effort"),
    (chat_body(logprobs="yes"), "logprobs"),
    (chat_body(top_logprobs=3), "top_logprobs"),
    (chat_body(logprobs=True, top_logprobs=21), "top_logprobs"),
    (chat_body(stop_token_ids=["x"]), "stop_token_ids"),
    (chat_body(max_tokens=4, min_tokens=5), "min_tokens"),
    (chat_body(response_format={"type": "xml"}), "response_format"),
    (chat_body(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
     "response_format.json_schema.name"),
    (chat_body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
               tools=[{"type": "function", "function": {"name": "f"}}]), "response_format"),
    ({"model": MODEL, "messages": []}, "messages"),
    ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": MODEL, "messages": [{"role": "tool"}]}, "messages[0].content"),
    ({"model": MODEL, "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f",
                                                                                      "arguments": "{"}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
])
async def test_invalid_chat_request_is_400_naming_the_param(client, body, param) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, CHAT_URL, body)
    error = openai_error(r)
    assert r.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == param, error


@pytest.mark.parametrize("body, param", [
    ({"model": MODEL}, "prompt"),
    ({"model": MODEL, "prompt": ""}, "prompt"),
    ({"model": MODEL, "prompt": ["a", "b"]}, "prompt"),
    ({"model": MODEL, "prompt": "a", "echo": True}, "echo"),
    ({"model": MODEL, "prompt": "a", "best_of": 3}, "best_of"),
    ({"model": MODEL, "prompt": "a", "logprobs": 6}, "logprobs"),
    ({"model": MODEL, "prompt": "a", "logprobs": True}, "logprobs"),
])
async def test_invalid_text_request_is_400_naming_the_param(client, body, param) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, TEXT_URL, body)
    assert r.status_code == 400 and openai_error(r)["param"] == param


@override_settings(API_MAX_BODY_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=4096)
async def test_body_larger_than_the_maximum_is_413(client) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, CHAT_URL, chat_body("x" * 3000))
    assert r.status_code == 413 and openai_error(r)["code"] == "request_too_large"


async def test_rate_limited_token_gets_429_with_retry_after(api_token) -> None:  # type: ignore[no-untyped-def]
    await ApiToken.objects.aupdate(rate_limit_per_minute=1)
    client = BearerClient(api_token)
    assert (await client.get("/v1/models")).status_code == 200
    r = await post_json(client, CHAT_URL, chat_body(max_tokens=1))
    assert r.status_code == 429 and openai_error(r)["code"] == "rate_limit_exceeded"
    assert 1 <= int(r["Retry-After"]) <= 60


@pytest.mark.parametrize("method, url", [("get", CHAT_URL), ("get", TEXT_URL), ("post", "/v1/models")])
async def test_openai_wrong_method_is_405(client, method, url) -> None:  # type: ignore[no-untyped-def]
    r = await getattr(client, method)(url)
    assert r.status_code == 405 and openai_error(r)["code"] == "method_not_allowed"


# chat turns: /api/conversations/<id>/messages ----------------------------------------------
@pytest.mark.parametrize("body, field", [
    ({}, "'content' is required"),
    ({"content": 5}, "'content' must be a string"),
    ({"content": "   "}, "'content' must not be empty"),
    ({"content": "hi", "max_tokens": 0}, "max_tokens"),
    ({"content": "hi", "temperature": 9}, "temperature"),
    ({"content": "hi", "system_prompt": 3}, "system_prompt"),
])
async def test_an_invalid_turn_is_400_with_code_5004_and_saves_nothing(client, body, field) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    r = await post_json(client, f"/api/conversations/{cid}/messages", body)
    assert native_error(r) == (400, 5004)
    assert field in r.json()["errors"][0]["message"]
    assert await Message.objects.filter(conversation_id=cid).acount() == 0


async def test_a_turn_for_an_unknown_model_is_400_with_code_5007(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    r = await send(client, cid, "hello", model="@cf/nobody/nothing")
    assert native_error(r) == (400, 5007)
    assert await Message.objects.filter(conversation_id=cid).acount() == 0
