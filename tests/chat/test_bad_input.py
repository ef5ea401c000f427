"""Hostile input on every endpoint that takes a body: numbers JSON should not carry (NaN,
infinities, integers past any range, floats that underflow), strings nothing can store (lone
surrogates, NUL), deep nesting, huge bodies, wrong types. Each is a clear JSON error in the
endpoint's envelope, or (underflowing floats) read at its limit; and none disturbs another
user's answer streaming meanwhile.

The native route's own cases are in ``test_validation.py``; here it is reached by its
account-scoped twin, and the OpenAI and conversation routes get every class.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import override_settings

from chat.models import ApiToken, Conversation, Message
from inference import Engine, pool
from tests.inference.conftest import fp32_engine  # noqa: F401 - a fixture
from tests.support import MODEL
from tests.support.api import CHAT_URL, NATIVE_URL, TEXT_URL, BearerClient, native_error, new_conversation, openai_error
from tests.support.sse import Event, parse_sse, read_sse

pytestmark = pytest.mark.django_db(transaction=True)

NUMBERS = ("temperature", "top_p", "repetition_penalty", "presence_penalty", "max_tokens", "seed")


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    url: str  # ``{cid}``: a fresh conversation of the caller's
    body: dict[str, Any]  # a valid body
    text: str  # where its main string goes (``a.0.b``: a path into the body)
    openai: bool = False
    numbers: tuple[str, ...] = field(default=NUMBERS)
    streams: bool = False


ENDPOINTS = [
    Endpoint("native", "POST", f"/client/v4/accounts/acc/ai/run/{MODEL}", {"prompt": "hi", "max_tokens": 2}, "prompt",
             streams=True),
    Endpoint("chat", "POST", CHAT_URL, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                        "max_tokens": 2}, "messages.0.content", openai=True, streams=True),
    Endpoint("text", "POST", TEXT_URL, {"model": MODEL, "prompt": "hi", "max_tokens": 2}, "prompt", openai=True,
             streams=True),
    Endpoint("turn", "POST", "/api/conversations/{cid}/messages", {"content": "hi", "max_tokens": 2}, "content"),
    Endpoint("create", "POST", "/api/conversations", {"title": "t"}, "title", numbers=()),
    Endpoint("update", "PATCH", "/api/conversations/{cid}", {"title": "t"}, "title", numbers=()),
]
GENERATING = [e for e in ENDPOINTS if e.numbers]


def put(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with ``value`` at ``path`` (dotted; digits index lists)."""
    body = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    node: Any = body
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return body


def raw(body: dict[str, Any], key: str, literal: str) -> str:
    """``body`` as JSON with ``"key": literal`` spliced in as it is (for what json.dumps will not write)."""
    rest = json.dumps({k: v for k, v in body.items() if k != key})
    return f'{rest[:-1]}{", " if len(rest) > 2 else ""}"{key}": {literal}}}'


def hostile(e: Endpoint) -> list[tuple[str, Any, str]]:
    """(what, body, a fragment the error message must hold) for every class of bad input."""
    cases: list[tuple[str, Any, str]] = []
    for name in e.numbers or (e.text,):
        cases += [(f"{name}={v}", raw(e.body, name, v), name) for v in ("NaN", "Infinity", "-Infinity")]
    for name in e.numbers:
        cases += [(f"{name} of wrong type {v!r}", put(e.body, name, v), name) for v in ("1", True, [1], {})]
    if e.numbers:
        cases += [
            ("a seed past 2**63", put(e.body, "seed", 10**30), "seed"),
            ("a 400-digit max_tokens", put(e.body, "max_tokens", 10**400), "max_tokens"),
            ("a top_k past 2**64", put(e.body, "top_k", 2**64 + 1), "top_k"),
            ("a temperature of 1e308", put(e.body, "temperature", 1e308), "temperature"),
            ("a temperature of 1e999", raw(e.body, "temperature", "1e999"), "temperature"),
            ("a stop of the wrong type", put(e.body, "stop", 5), "stop"),
            ("a stop holding a number", put(e.body, "stop", ["a", 5]), "stop"),
        ]
    if e.streams:
        cases.append(("stream as a string", put(e.body, "stream", "true"), "stream"))
    return cases + [
        ("a 5000-digit integer", raw(e.body, "x", "9" * 5000), "number too large"),
        ("a lone surrogate", raw(e.body, "x", '"\\udc00"'), "Unicode"),
        ("a lone surrogate in the text", json.dumps(put(e.body, e.text, "a\ud800b")), "Unicode"),
        ("a lone surrogate as a key", raw(e.body, "\\ud800", "1"), "Unicode"),
        ("a NUL in the text", put(e.body, e.text, "a\x00b"), "NUL"),
        ("40 levels of nesting", raw(e.body, "x", "[" * 40 + "]" * 40), "nested"),
        ("100000 open brackets", "[" * 100_000, "nested"),
        ("the text as an object", put(e.body, e.text, {"a": 1}), e.text.split(".")[0]),
        ("the text as a number", put(e.body, e.text, 5), e.text.split(".")[0]),
        ("a list body", [e.body], "object"),
        ("a string body", json.dumps("hi"), "object"),
        ("a null body", "null", "object"),
        ("not JSON", '{"prompt": "hi"', "JSON"),
        ("invalid UTF-8", b'{"prompt": "\xff\xfe"}', "JSON"),
    ]


async def call(client: BearerClient, e: Endpoint, body: Any) -> Any:
    url = e.url.format(cid=await new_conversation(client)) if "{cid}" in e.url else e.url
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return await client.generic(e.method, url, data, content_type="application/json")


def error_of(e: Endpoint, response: Any) -> tuple[int, str]:
    """(HTTP status, message) after checking the body is the endpoint's error envelope."""
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    if e.openai:
        return response.status_code, openai_error(response)["message"]
    status, code = native_error(response)
    assert code == {400: 5004, 413: 3006}.get(status), (status, code)
    return status, response.json()["errors"][0]["message"]


@pytest.mark.usefixtures("no_engine")
@pytest.mark.parametrize("e", ENDPOINTS, ids=lambda e: e.name)
async def test_hostile_bodies_get_a_400_naming_the_rule_in_the_endpoints_envelope(client, e: Endpoint) -> None:  # type: ignore[no-untyped-def]
    wrong = []
    for what, body, fragment in hostile(e):
        status, message = error_of(e, await call(client, e, body))
        if status != 400 or fragment not in message:
            wrong.append(f"{what}: {status} {message!r} (expected 400 naming {fragment!r})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.usefixtures("no_engine")
@override_settings(API_MAX_BODY_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=4096)
@pytest.mark.parametrize("e", ENDPOINTS, ids=lambda e: e.name)
async def test_a_body_past_the_limit_is_413_in_the_endpoints_envelope(client, e: Endpoint) -> None:  # type: ignore[no-untyped-def]
    status, message = error_of(e, await call(client, e, put(e.body, e.text, "x" * 3000)))
    assert status == 413 and "too large" in message


@pytest.mark.parametrize("e", GENERATING, ids=lambda e: e.name)
async def test_underflowing_floats_are_read_at_their_limit(client, loaded, e: Endpoint) -> None:  # type: ignore[no-untyped-def]
    """Values that underflow where the maths divides by them answer like their nearest usable value."""
    tiny = {"temperature": 1e-300, "top_p": 5e-324, "repetition_penalty": 1e-300, "frequency_penalty": -1e-300}
    r = await call(client, e, {**e.body, **tiny})
    assert r.status_code in (200, 201), r.content
    if e.name == "turn":
        events = await read_sse(await client.get(r.json()["result"]["stream_url"]))
        assert events[-1].done and events[-2].json()["state"] == "done"


@pytest.fixture
def exact(fp32_engine: Engine, engine: Engine) -> Iterator[Engine]:  # noqa: F811
    """The float32 engine serves ``MODEL`` for the test: there a row's numbers do not depend
    on the rows batched with it (in bf16, near-ties may break differently in another batch)."""
    pool.set(MODEL, fp32_engine)
    yield fp32_engine
    pool.set(MODEL, engine)


async def test_a_greedy_stream_of_another_user_is_untouched_by_hostile_requests(client, exact) -> None:  # type: ignore[no-untyped-def]
    """While bob's greedy answer streams, alice sends every hostile body to every endpoint, and
    answers with underflowing sampling values join bob's batch: bob's answer is the one he
    gets alone, ending with [DONE]."""
    def issue() -> str:
        return ApiToken.issue(get_user_model().objects.create_user("bob"), "bob")[1]
    bob = BearerClient(await sync_to_async(issue)())
    greedy = {"prompt": "Write a story about a lighthouse keeper.", "max_tokens": 128, "temperature": 0, "stream": True}

    async def bobs_answer(started: asyncio.Event, finished: asyncio.Event) -> list[Event]:
        response = await bob.post(NATIVE_URL, json.dumps(greedy), content_type="application/json")
        chunks = []
        async for chunk in response.streaming_content:
            chunks.append(chunk if isinstance(chunk, bytes) else chunk.encode())
            started.set()
        finished.set()
        return parse_sse(b"".join(chunks).decode())

    def text(events: list[Event]) -> str:
        assert events[-1].done
        return "".join(e.json()["response"] for e in events[:-1])

    alone = text(await bobs_answer(asyncio.Event(), asyncio.Event()))

    async def alice(started: asyncio.Event, finished: asyncio.Event) -> tuple[list[int], list[int], bool]:
        await started.wait()
        tiny = {"temperature": 1e-300, "top_p": 5e-324, "repetition_penalty": 1e-300, "max_tokens": 8}
        generating = asyncio.gather(*[call(client, e, {**e.body, **tiny}) for e in GENERATING])
        refused = asyncio.gather(*[call(client, e, body) for e in ENDPOINTS for _, body, _ in hostile(e)])
        answered = [r.status_code for r in await generating]
        overlapped = not finished.is_set()
        return answered, [r.status_code for r in await refused], overlapped

    started, finished = asyncio.Event(), asyncio.Event()
    together, (answered, refused, overlapped) = await asyncio.gather(bobs_answer(started, finished),
                                                                      alice(started, finished))
    assert overlapped, "alice's answers must share bob's batch for this test to mean anything"
    assert text(together) == alone and len(alone) > 200
    assert set(refused) == {400}
    assert set(answered) <= {200, 201, 429} and {200, 201} & set(answered), answered  # 429: alice's share is full


@pytest.mark.parametrize("offset", ["²", "٣", "9" * 5000, "-1", "abc"])
async def test_a_resume_offset_that_is_not_a_plain_number_streams_from_the_start(client, offset: str) -> None:  # type: ignore[no-untyped-def]
    """``Last-Event-ID`` is whatever the client sends: Unicode digits (which ``str.isdigit``
    accepts and ``int`` may not) or thousands of digits replay the answer from its start."""
    def answered() -> tuple[int, int]:
        user = get_user_model().objects.get(username="alice")
        conversation = Conversation.objects.create(owner=user, model=MODEL)
        Message.objects.create(conversation=conversation, role="user", content="hi")
        answer = Message.objects.create(conversation=conversation, role="assistant", content="hello", state="done")
        return conversation.pk, answer.pk
    cid, mid = await sync_to_async(answered)()
    url = f"/api/conversations/{cid}/messages/{mid}/stream"
    responses = [await client.get(url, {"offset": offset})]
    if offset == offset.encode("latin-1", "ignore").decode("latin-1"):  # HTTP headers are latin-1
        responses.append(await client.get(url, headers={"Last-Event-ID": offset}))
    for response in responses:
        assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
        events = await read_sse(response)
        assert events[0].json()["response"] == "hello" and events[-1].done
