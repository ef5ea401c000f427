"""The native API contract, row by row, through Django's async test client: answers, streams,
limits that need the model. Refusals that need no model are in ``test_validation.py``."""
from __future__ import annotations

import asyncio

import pytest

from chat import background
from chat.models import UsageRecord
from inference.errors import QueueFull
from tests.support import MODEL
from tests.support.api import NATIVE_URL, native_error, post_json
from tests.support.sse import read_sse

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model, pytest.mark.usefixtures("loaded")]


async def test_it_answers_a_prompt_in_the_success_envelope(client) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, NATIVE_URL, {"prompt": "where is new york?", "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    usage = body["result"]["usage"]
    assert body["result"]["response"].strip()
    assert usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_the_account_scoped_path_serves_the_same_api(client) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, f"/client/v4/accounts/abc123/ai/run/{MODEL}", {"prompt": "hi", "max_tokens": 3})
    assert r.status_code == 200 and r.json()["success"], r.json()


async def test_stream_pieces_concatenate_to_the_non_streamed_answer(client) -> None:  # type: ignore[no-untyped-def]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is Paris? ünïcode ✓"}]
    body = {"messages": messages, "max_tokens": 24, "seed": 3, "temperature": 0.8}
    plain = (await post_json(client, NATIVE_URL, body)).json()["result"]
    r = await post_json(client, NATIVE_URL, {**body, "stream": True})
    assert r.status_code == 200
    assert r["Content-Type"] == "text/event-stream"
    assert r["Cache-Control"] == "no-cache" and r["X-Accel-Buffering"] == "no"
    events = await read_sse(r)
    assert all(e.data_only for e in events) and events[-1].done
    payloads = [e.json() for e in events[:-1]]
    assert payloads[-1]["response"] == "" and payloads[-1]["usage"] == plain["usage"]
    pieces = [p["response"] for p in payloads[:-1]]
    assert len(pieces) > 3
    assert "".join(pieces) == plain["response"]


async def test_same_seed_gives_the_same_output(client) -> None:  # type: ignore[no-untyped-def]
    body = {"prompt": "Invent a name for a cat.", "max_tokens": 16, "seed": 1234, "temperature": 1.2}
    a, b = [(await post_json(client, NATIVE_URL, body)).json()["result"]["response"] for _ in range(2)]
    assert a == b


async def test_input_longer_than_the_context_window_is_413_naming_both_numbers(client) -> None:  # type: ignore[no-untyped-def]
    r = await post_json(client, NATIVE_URL, {"prompt": "hello " * 7000})
    assert native_error(r) == (413, 5021)
    message = r.json()["errors"][0]["message"]
    assert message.startswith("The estimated number of input tokens (") and "(6144)" in message
    n = int(message.split("(")[1].split(")")[0])
    assert n > 6144


async def test_full_queue_is_429_with_code_3040_and_retry_after(client, loaded, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise QueueFull(retry_after=2)
    monkeypatch.setattr(loaded, "submit", full)
    r = await post_json(client, NATIVE_URL, {"prompt": "hi"})
    assert native_error(r) == (429, 3040)
    assert r["Retry-After"] == "2"


async def test_raw_prompt_skips_the_chat_template(client) -> None:  # type: ignore[no-untyped-def]
    body = {"prompt": "The capital of France is", "max_tokens": 2}
    templated = (await post_json(client, NATIVE_URL, body)).json()["result"]
    raw = (await post_json(client, NATIVE_URL, {**body, "raw": True})).json()["result"]
    assert raw["usage"]["prompt_tokens"] < templated["usage"]["prompt_tokens"]


async def test_usage_is_recorded_against_the_token(client) -> None:  # type: ignore[no-untyped-def]
    body = (await post_json(client, NATIVE_URL, {"prompt": "hi", "max_tokens": 4})).json()["result"]
    await background.drain_background()
    record = await UsageRecord.objects.select_related("token").alatest("created_at")
    assert record.token is not None and record.endpoint == "native"
    assert (record.prompt_tokens, record.completion_tokens) == (body["usage"]["prompt_tokens"],
                                                              body["usage"]["completion_tokens"])


async def test_health_and_readiness(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


async def test_tiny_sampling_values_cannot_break_a_shared_batch(client, loaded) -> None:  # type: ignore[no-untyped-def]
    """Values that underflow where the maths divides by them are read at their limit."""
    greedy = {"prompt": "Name a fruit.", "max_tokens": 8, "temperature": 0}
    expected = (await post_json(client, NATIVE_URL, greedy)).json()["result"]["response"]
    tiny = {"prompt": "Name a fruit.", "max_tokens": 8, "temperature": 1e-300, "top_p": 1e-300,
            "repetition_penalty": 1e-300}
    other, odd = await asyncio.gather(post_json(client, NATIVE_URL, greedy), post_json(client, NATIVE_URL, tiny))
    assert odd.status_code == 200 and odd.json()["success"], odd.json()
    assert other.status_code == 200 and other.json()["result"]["response"].strip()
    assert expected.strip()
