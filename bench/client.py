"""The HTTP side: one streaming OpenAI-compatible client for every server measured, and the
per-request metrics it records.

Both this project's server and the peer (llama-server, vLLM, ...) are measured the same way:
``POST {base}/v1/chat/completions`` with ``stream: true``, ``stream_options.include_usage``,
``temperature: 0`` and ``max_tokens``. The time to first token is the arrival of the first
chunk with text; the inter-token latencies are the gaps between chunks with text, and the
time per output token spreads the decode time over the tokens (a server may send several tokens
in one chunk); token counts come from the usage chunk (or, when a server sends none, the number
of text chunks).
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

Messages = list[dict[str, str]]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation; None when empty."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass(frozen=True)
class Target:
    """A server under test: ``ours`` (this project) or ``peer`` (any OpenAI-compatible server)."""

    name: str
    base_url: str  # without /v1
    model: str
    token: str | None = None
    pid: int | None = None  # known for a server bench started, or given: enables RSS and the CPU meter
    fixed_length: bool = False  # every answer runs to max_tokens (min_tokens, ignore_eos): random-weight models

    @property
    def completions_url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


def normalize_base_url(url: str) -> str:
    """``http://h:8080/v1/`` -> ``http://h:8080`` (the client appends ``/v1/...`` itself)."""
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def first_model(base_url: str, token: str | None, timeout: float = 30.0) -> str:
    """The id of the first entry of ``GET {base}/v1/models`` (what a llama-server serves)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{base_url}/v1/models", headers=headers, timeout=timeout)
    response.raise_for_status()
    data = response.json().get("data") or []
    if not data or not data[0].get("id"):
        raise ValueError(f"{base_url}/v1/models lists no model")
    return str(data[0]["id"])


def chat_body(model: str, messages: Messages, max_tokens: int) -> dict[str, Any]:
    """The request every scenario sends, to every server (greedy, streamed, usage included)."""
    return {
        "model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True},
    }


@dataclass
class Chunk:
    """What one ``data:`` payload of an OpenAI stream says."""

    text: str = ""
    usage: dict[str, Any] | None = None
    error: str | None = None


def parse_chunk(payload: str) -> Chunk:
    """Parse one ``chat.completion.chunk`` (or an ``{"error": ...}`` event) payload."""
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError(f"unexpected stream payload: {payload[:200]}")
    if data.get("error"):
        error = data["error"]
        message = error.get("message") if isinstance(error, dict) else None
        return Chunk(error=str(message or error))
    text = ""
    for choice in data.get("choices") or []:
        delta = choice.get("delta") or {}
        # reasoning models stream their thinking separately; it is generated text all the same
        text += (delta.get("content") or "") + (delta.get("reasoning_content") or "")
    usage = data.get("usage")
    return Chunk(text=text, usage=usage if isinstance(usage, dict) else None)


@dataclass
class RequestResult:
    """What the client saw of one request (times in seconds, from ``time.perf_counter``)."""

    index: int
    started: float
    finished: float = 0.0
    piece_times: list[float] = field(default_factory=list)
    text: str = ""
    completion_tokens: int = 0
    prompt_tokens: int = 0
    usage_reported: bool = False
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.piece_times[0] - self.started if self.piece_times else None

    @property
    def total(self) -> float:
        return self.finished - self.started

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: from the first text to the last, over the
        tokens between (servers that send several tokens per chunk have fewer, longer gaps)."""
        if len(self.piece_times) < 2 or self.completion_tokens < 2:
            return None
        return (self.piece_times[-1] - self.piece_times[0]) / (self.completion_tokens - 1)

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.piece_times, self.piece_times[1:])]

    def gap_spans(self) -> list[tuple[float, float]]:
        """(start, end) of every inter-token gap, on the ``perf_counter`` clock."""
        return list(zip(self.piece_times, self.piece_times[1:]))


def make_client(concurrency: int, timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0), limits=limits)


async def stream_chat(client: httpx.AsyncClient, target: Target, messages: Messages, max_tokens: int,
                      index: int, timeout: float,
                      on_piece: Callable[[RequestResult], None] | None = None,
                      extra: dict[str, Any] | None = None) -> RequestResult:
    """One streaming chat completion; records the arrival time of every chunk with text.
    ``extra`` fields join the body (``response_format``...)."""
    result = RequestResult(index=index, started=time.perf_counter())
    body = {**chat_body(target.model, messages, max_tokens), **(extra or {})}
    if target.fixed_length:  # ours reads min_tokens (as vLLM), llama-server ignore_eos; each ignores the other
        body.update(min_tokens=max_tokens, ignore_eos=True)

    async def run() -> None:
        async with client.stream("POST", target.completions_url, json=body, headers=target.headers()) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                result.error = f"HTTP {response.status_code}: {text[:200]}"
                return
            done = False
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, "event:" lines
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                chunk = parse_chunk(payload)
                if chunk.error is not None:
                    result.error = f"stream error: {chunk.error}"
                    return
                if chunk.text:
                    result.piece_times.append(time.perf_counter())
                    result.text += chunk.text
                    if on_piece is not None:
                        on_piece(result)
                if chunk.usage:
                    result.usage_reported = True
                    result.completion_tokens = int(chunk.usage.get("completion_tokens") or 0)
                    result.prompt_tokens = int(chunk.usage.get("prompt_tokens") or 0)
            if not done:
                result.error = "stream ended without [DONE]"

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        result.error = f"timed out after {timeout:.0f}s"
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.finished = time.perf_counter()
    if not result.usage_reported:
        result.completion_tokens = len(result.piece_times)
    return result


async def stream_many(target: Target, conversations: Sequence[Messages], max_tokens: int,
                      timeout: float, extras: Sequence[dict[str, Any] | None] | None = None) -> list[RequestResult]:
    """All ``conversations`` sent at once (``extras[i]`` joining body i); returns when every one has ended."""
    async with make_client(len(conversations), timeout) as client:
        tasks = [stream_chat(client, target, messages, max_tokens, i, timeout,
                             extra=extras[i] if extras else None)
                 for i, messages in enumerate(conversations)]
        return list(await asyncio.gather(*tasks))
