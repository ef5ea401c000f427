"""The native API contract, row by row, through Django's async test client."""
from __future__ import annotations

import json

import pytest
from django.test import AsyncClient, override_settings

from chat import background
from chat.models import UsageRecord
from inference import pool
from inference.errors import QueueFull
from tests.chat.conftest import BearerClient

MODEL = "@cf/huggingfacetb/smollm2-135m-instruct"
URL = f"/ai/run/{MODEL}"
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model]


async def post(client: AsyncClient, body: object, url: str = URL, **extra: str):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return await client.post(url, data, content_type="application/json", **extra)


def error_of(response) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    body = response.json()
    assert body["success"] is False and body["result"] is None and body["messages"] == []
    return response.status_code, body["errors"][0]["code"]


async def read_sse(response) -> list[str]:  # type: ignore[no-untyped-def]
    chunks = [c async for c in response.streaming_content]
    text = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks).decode()
    return [e for e in text.split("\n\n") if e]


@pytest.fixture(autouse=True)
def loaded(engine):  # type: ignore[no-untyped-def]
    pool.set(MODEL, engine)
    return engine


async def test_it_answers_a_prompt_in_the_success_envelope(client) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, {"prompt": "where is new york?", "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    usage = body["result"]["usage"]
    assert body["result"]["response"].strip()
    assert usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_the_account_scoped_path_serves_the_same_api(client) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, {"prompt": "hi", "max_tokens": 3}, url=f"/client/v4/accounts/abc123/ai/run/{MODEL}")
    assert r.status_code == 200 and r.json()["success"], r.json()


async def test_stream_pieces_concatenate_to_the_non_streamed_answer(client) -> None:  # type: ignore[no-untyped-def]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is Paris? ünïcode ✓"}]
    body = {"messages": messages, "max_tokens": 24, "seed": 3, "temperature": 0.8}
    plain = (await post(client, body)).json()["result"]
    r = await post(client, {**body, "stream": True})
    assert r.status_code == 200
    assert r["Content-Type"] == "text/event-stream"
    assert r["Cache-Control"] == "no-cache" and r["X-Accel-Buffering"] == "no"
    events = await read_sse(r)
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert payloads[-1]["response"] == "" and payloads[-1]["usage"] == plain["usage"]
    pieces = [p["response"] for p in payloads[:-1]]
    assert len(pieces) > 3
    assert "".join(pieces) == plain["response"]


async def test_same_seed_gives_the_same_output(client) -> None:  # type: ignore[no-untyped-def]
    body = {"prompt": "Invent a name for a cat.", "max_tokens": 16, "seed": 1234, "temperature": 1.2}
    a, b = [(await post(client, body)).json()["result"]["response"] for _ in range(2)]
    assert a == b


@pytest.mark.parametrize("authorization", [None, "Bearer wai_nope_nope", "Basic abc", "Bearer "])
async def test_missing_or_bad_token_is_401_with_code_10000(api_token, authorization) -> None:  # type: ignore[no-untyped-def]
    r = await post(BearerClient(authorization=authorization), {"prompt": "hi"})
    assert error_of(r) == (401, 10000)
    assert r.json()["errors"][0]["message"] == "Authentication error"


async def test_unknown_model_is_400_with_code_5007(client) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, {"prompt": "hi"}, url="/ai/run/@cf/nobody/nothing")
    assert error_of(r) == (400, 5007)
    assert r.json()["errors"][0]["message"] == "No such model @cf/nobody/nothing or task"


async def test_listed_but_unavailable_model_is_503_with_the_reason(client) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, {"prompt": "hi"}, url="/ai/run/@cf/meta/llama-2-7b-chat-fp16")
    assert error_of(r) == (503, 5008)
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
])
async def test_invalid_body_is_400_with_code_5004_naming_the_field(client, body, field) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, body)
    assert error_of(r) == (400, 5004)
    assert field in r.json()["errors"][0]["message"]


async def test_input_longer_than_the_context_window_is_413_naming_both_numbers(client) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, {"prompt": "hello " * 7000})
    assert error_of(r) == (413, 5021)
    message = r.json()["errors"][0]["message"]
    assert message.startswith("The estimated number of input tokens (") and "(6144)" in message
    n = int(message.split("(")[1].split(")")[0])
    assert n > 6144


@override_settings(API_MAX_BODY_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=4096)
async def test_body_larger_than_the_maximum_is_413_with_code_3006(client) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, {"prompt": "x" * 3000})
    assert error_of(r) == (413, 3006)
    assert r.json()["errors"][0]["message"] == "Request is too large"


async def test_full_queue_is_429_with_code_3040_and_retry_after(client, loaded, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise QueueFull(retry_after=2)
    monkeypatch.setattr(loaded, "submit", full)
    r = await post(client, {"prompt": "hi"})
    assert error_of(r) == (429, 3040)
    assert r["Retry-After"] == "2"


@pytest.mark.parametrize("method", ["get", "put", "delete"])
async def test_wrong_method_is_405(client, method) -> None:  # type: ignore[no-untyped-def]
    r = await getattr(client, method)(URL)
    assert r.status_code == 405


async def test_raw_prompt_skips_the_chat_template(client) -> None:  # type: ignore[no-untyped-def]
    templated = (await post(client, {"prompt": "The capital of France is", "max_tokens": 2})).json()["result"]
    raw = (await post(client, {"prompt": "The capital of France is", "max_tokens": 2, "raw": True})).json()["result"]
    assert raw["usage"]["prompt_tokens"] < templated["usage"]["prompt_tokens"]


async def test_usage_is_recorded_against_the_token(client) -> None:  # type: ignore[no-untyped-def]
    body = (await post(client, {"prompt": "hi", "max_tokens": 4})).json()["result"]
    await background.drain_background()
    record = await UsageRecord.objects.select_related("token").alatest("created_at")
    assert record.token is not None and record.endpoint == "native"
    assert (record.prompt_tokens, record.completion_tokens) == (body["usage"]["prompt_tokens"],
                                                              body["usage"]["completion_tokens"])


async def test_models_search_lists_the_catalog_with_limits_and_availability(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.get("/ai/models/search")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["result"]}
    llama = models["@cf/meta/llama-2-7b-chat-int8"]
    props = {p["property_id"]: p["value"] for p in llama["properties"]}
    assert props["context_length_limit"] == "2048" and props["sequence_length_limit"] == "1800"
    assert llama["task"] == {"name": "Text Generation"} and llama["available"] is False
    assert models[MODEL]["available"] is True


async def test_health_and_readiness(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


@pytest.mark.parametrize("field", ["temperature", "top_p", "repetition_penalty", "frequency_penalty"])
@pytest.mark.parametrize("raw_value", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_numbers_are_refused_by_name(client, field: str, raw_value: str) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, f'{{"prompt": "hi", "{field}": {raw_value}}}')
    assert error_of(r) == (400, 5004)
    assert field in r.json()["errors"][0]["message"]


async def test_tiny_sampling_values_cannot_break_a_shared_batch(client, loaded) -> None:  # type: ignore[no-untyped-def]
    """Values that underflow where the maths divides by them are read at their limit."""
    import asyncio

    greedy = {"prompt": "Name a fruit.", "max_tokens": 8, "temperature": 0}
    expected = (await post(client, greedy)).json()["result"]["response"]
    tiny = {"prompt": "Name a fruit.", "max_tokens": 8, "temperature": 1e-300, "top_p": 1e-300,
            "repetition_penalty": 1e-300}
    other, odd = await asyncio.gather(post(client, greedy), post(client, tiny))
    assert odd.status_code == 200 and odd.json()["success"], odd.json()
    assert other.status_code == 200 and other.json()["result"]["response"].strip()
    assert expected.strip()


@pytest.mark.parametrize("body, rule", [
    ('{"prompt": "\\ud800"}', "Unicode"),
    ('{"prompt": "a\\u0000b"}', "NUL"),
    ('{"prompt": "hi", "seed": ' + "9" * 5000 + "}", "number too large"),
    ("[" * 100_000, "nested"),
    ('{"prompt": "hi", "x": ' + "[" * 40 + "]" * 40 + "}", "nested"),
])
async def test_bodies_json_allows_but_nothing_can_hold_get_a_400_envelope(client, body: str, rule: str) -> None:  # type: ignore[no-untyped-def]
    r = await post(client, body)
    assert error_of(r) == (400, 5004)
    assert rule in r.json()["errors"][0]["message"]


async def test_the_account_scoped_models_search_lists_the_catalog(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.get("/client/v4/accounts/abc123/ai/models/search")
    assert r.status_code == 200 and r.json()["success"]
    assert MODEL in [m["name"] for m in r.json()["result"]]
