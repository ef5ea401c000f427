"""The streaming client and its metrics, against canned OpenAI streams (no server)."""
from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from bench.client import Target, chat_body, normalize_base_url, parse_chunk, percentile, stream_chat
from tests.support.sse import DONE, encode_sse


def delta(text: str) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}


def client_for(body: bytes, status: int = 200, seen: list[dict[str, Any]] | None = None) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append({"url": str(request.url), "auth": request.headers.get("authorization"),
                         "body": json.loads(request.content)})
        return httpx.Response(status, content=body, headers={"content-type": "text/event-stream"})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


TARGET = Target("ours", "http://test", "m", token="secret")
MESSAGES = [{"role": "user", "content": "hi"}]


def test_percentile_interpolates_and_handles_empty() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)


def test_normalize_base_url() -> None:
    assert normalize_base_url("http://h:8080/v1/") == "http://h:8080"
    assert normalize_base_url(" http://h:8080 ") == "http://h:8080"


def test_chat_body_is_greedy_streamed_with_usage() -> None:
    body = chat_body("m", MESSAGES, 7)
    assert body == {"model": "m", "messages": MESSAGES, "max_tokens": 7, "temperature": 0, "stream": True,
                    "stream_options": {"include_usage": True}}


def test_parse_chunk() -> None:
    assert parse_chunk(json.dumps(delta("Hel"))).text == "Hel"
    role_only = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}
    assert parse_chunk(json.dumps(role_only)).text == ""
    usage = parse_chunk(json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}))
    assert usage.usage == {"prompt_tokens": 3, "completion_tokens": 2} and usage.text == ""
    assert parse_chunk(json.dumps({**delta("x"), "usage": None})).usage is None
    assert parse_chunk(json.dumps({"error": {"message": "boom"}})).error == "boom"
    with pytest.raises(ValueError):
        parse_chunk("[1, 2]")


async def test_stream_chat_times_pieces_and_reads_usage() -> None:
    seen: list[dict[str, Any]] = []
    closing = {"choices": [{"delta": {}, "finish_reason": "length"}]}
    body = encode_sse(delta(""), delta("Hello"), delta(" world"), closing,
                      {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}, DONE)
    async with client_for(body, seen=seen) as client:
        r = await stream_chat(client, TARGET, MESSAGES, 3, 0, 10)
    assert r.error is None and r.text == "Hello world"
    assert len(r.piece_times) == 2 and len(r.gaps) == 1 and r.ttft is not None and r.ttft >= 0
    assert (r.prompt_tokens, r.completion_tokens, r.usage_reported) == (5, 3, True)
    assert r.tpot == pytest.approx(r.gaps[0] / 2)  # 3 tokens in 2 chunks
    assert seen[0]["url"] == "http://test/v1/chat/completions" and seen[0]["auth"] == "Bearer secret"
    assert seen[0]["body"]["messages"] == MESSAGES and seen[0]["body"]["max_tokens"] == 3


async def test_stream_chat_without_usage_counts_chunks() -> None:
    async with client_for(encode_sse(delta("a"), delta("b"), DONE)) as client:
        r = await stream_chat(client, Target("peer", "http://test", "m"), MESSAGES, 3, 0, 10)
    assert r.error is None and r.completion_tokens == 2 and not r.usage_reported


@pytest.mark.parametrize(("body", "status", "expected"), [
    (b'{"error": {"message": "no"}}', 401, "HTTP 401"),
    (encode_sse(delta("a"), {"error": {"message": "Generation failed"}}), 200, "stream error: Generation failed"),
    (encode_sse(delta("a")), 200, "without [DONE]"),
])
async def test_stream_chat_errors(body: bytes, status: int, expected: str) -> None:
    async with client_for(body, status) as client:
        r = await stream_chat(client, TARGET, MESSAGES, 3, 0, 10)
    assert r.error is not None and expected in r.error and r.finished >= r.started


async def test_stream_chat_calls_on_piece() -> None:
    counts: list[int] = []
    async with client_for(encode_sse(delta("a"), delta("b"), DONE)) as client:
        await stream_chat(client, TARGET, MESSAGES, 3, 0, 10, on_piece=lambda r: counts.append(len(r.piece_times)))
    assert counts == [1, 2]
