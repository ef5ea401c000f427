"""Catalog entries served by a remote OpenAI-compatible server (vLLM, TGI, SGLang, llama.cpp's
llama-server, Ollama, another instance of this project).

A ``RemoteEngine`` stands where a local ``Engine`` would: the gateway keeps its API, tokens,
usage, limits and durable chats, and the upstream generates. Each request goes to the
healthy upstream with the fewest requests in flight; an upstream that cannot be reached or
answers 5xx is taken out for a back-off (1 s, doubling to 30 s) and the request is tried on
the next one, since nothing has been streamed yet. After its back-off an upstream gets
requests again (the first one probes it). A caller that leaves cancels the upstream request:
its connection is closed, and the upstream stops generating.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import metrics
from .catalog import ModelSpec
from .errors import ModelUnavailable, QueueFull, UpstreamError
from .outputs import Finished, RequestStream, Usage
from .sequence import SamplingParams

logger = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0  # seconds to open a connection to an upstream
FIRST_BYTE_TIMEOUT = 120.0  # seconds for the upstream's response to start (it may queue us)
READ_TIMEOUT = 300.0  # seconds without a byte mid-stream before the request fails
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


@dataclass
class Upstream:
    url: str  # base URL, ending in /v1
    in_flight: int = 0
    failures: int = 0
    down_until: float = 0.0  # time.monotonic(); 0 when healthy
    last_error: str = ""
    has_tokenize: bool | None = None  # unknown until tried
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> str:
        return self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url

    def healthy(self, now: float) -> bool:
        return self.down_until <= now

    def mark_down(self, error: str) -> None:
        self.failures += 1
        backoff = min(BACKOFF_FIRST * 2 ** (self.failures - 1), BACKOFF_MAX)
        self.down_until = time.monotonic() + backoff
        self.last_error = error
        logger.warning("upstream %s down for %.0f s: %s", self.url, backoff, error)

    def mark_up(self) -> None:
        if self.failures:
            logger.info("upstream %s is back", self.url)
        self.failures, self.down_until, self.last_error = 0, 0.0, ""


class RemoteEngine:
    """The engine of an ``openai:`` catalog entry."""

    is_remote = True

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.model = spec.upstream_model or spec.name
        self.upstreams = [Upstream(u.rstrip("/")) for u in (spec.source_ref, *spec.upstreams)]
        self._api_key = os.environ.get(spec.api_key_env, "") if spec.api_key_env else ""
        self._client: httpx.AsyncClient | None = None  # made on first use, on the caller's event loop
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[str, asyncio.Task[None]] = {}

    # state -----------------------------------------------------------------------------------
    def state(self) -> str:
        now = time.monotonic()
        up = sum(u.healthy(now) for u in self.upstreams)
        if up == 0:
            return f"unreachable ({self.upstreams[0].last_error or 'no upstream answers'})"
        return f"remote: {up}/{len(self.upstreams)} upstreams up"

    def update_metrics(self) -> None:
        metrics.REQUESTS_RUNNING.labels(self.name).set(len(self._running))
        for u in self.upstreams:
            metrics.UPSTREAM_UP.labels(self.name, u.url).set(1 if u.healthy(time.monotonic()) else 0)
            metrics.UPSTREAM_IN_FLIGHT.labels(self.name, u.url).set(u.in_flight)

    @property
    def num_running(self) -> int:
        return len(self._running)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel every open upstream request (from any thread)."""
        for task in list(self._running.values()):
            task.get_loop().call_soon_threadsafe(task.cancel)

    def compile_guide(self, guide: Any) -> None:
        """Grammars are the upstream's business; only JSON output passes through."""
        if guide is not None and guide.kind not in ("json_object", "json_schema"):
            raise UpstreamError(400, "'tools' are not supported for remote catalog entries yet")

    # requests --------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _client_for_loop(self) -> httpx.AsyncClient:
        """httpx clients belong to one event loop (tests run several)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT))
            self._client_loop = loop
        return self._client

    def _order(self) -> list[Upstream]:
        """Healthy upstreams, fewest in flight first; then the rest by when their back-off ends."""
        now = time.monotonic()
        healthy = sorted((u for u in self.upstreams if u.healthy(now)), key=lambda u: u.in_flight)
        resting = sorted((u for u in self.upstreams if not u.healthy(now)), key=lambda u: u.down_until)
        return healthy + resting

    def body(self, params: SamplingParams, prompt: str | None, messages: list[dict[str, str]] | None,
             raw: bool) -> tuple[str, dict[str, Any]]:
        """The upstream path and body for a request."""
        body: dict[str, Any] = {
            "model": self.model, "stream": True, "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.min_tokens:
            body["min_tokens"] = params.min_tokens  # vLLM's and SGLang's name
        if params.stop:
            body["stop"] = list(params.stop)
        if params.frequency_penalty:
            body["frequency_penalty"] = params.frequency_penalty
        if params.presence_penalty:
            body["presence_penalty"] = params.presence_penalty
        if params.top_k:
            body["top_k"] = params.top_k  # vLLM, llama-server, SGLang and Ollama's OpenAI API take it
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty  # vLLM's and SGLang's name
        if params.guide is not None:
            if params.guide.kind == "json_object":
                body["response_format"] = {"type": "json_object"}
            else:
                body["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": "schema", "schema": json.loads(params.guide.source), "strict": True}}
        if prompt is not None and raw:
            return "/completions", {**body, "prompt": prompt}
        return "/chat/completions", {**body, "messages": messages or [{"role": "user", "content": prompt or ""}]}

    async def count_tokens(self, prompt: str | None, messages: list[dict[str, str]] | None, raw: bool) -> int | None:
        """The prompt's length in the upstream's tokens, where it has a ``/tokenize`` (vLLM's
        and this project's shape), else None."""
        client = self._client_for_loop()
        for upstream in self._order():
            if upstream.has_tokenize is False or not upstream.healthy(time.monotonic()):
                continue
            body: dict[str, Any] = {"model": self.model}
            body.update({"prompt": prompt} if prompt is not None and raw else
                        {"messages": messages or [{"role": "user", "content": prompt or ""}]})
            try:
                r = await client.post(f"{upstream.root}/tokenize", json=body, headers=self._headers(), timeout=10)
            except httpx.HTTPError:
                continue
            try:
                count = r.json().get("count") if r.status_code == 200 else None
            except (ValueError, AttributeError):
                count = None
            if isinstance(count, int):
                upstream.has_tokenize = True
                return count
            if r.status_code < 500 and r.status_code != 429:
                # not this shape of /tokenize (llama-server's takes "content"; others have none):
                # never asked again, rather than one wasted round trip per request
                upstream.has_tokenize = False
        return None

    async def start(self, *, params: SamplingParams, prompt: str | None = None,
                    messages: list[dict[str, str]] | None = None, raw: bool = False,
                    num_prompt_tokens: int | None = None, log_tag: str = "") -> RequestStream:
        """Open the upstream stream and return ours once it has started. Raises
        ``ModelUnavailable`` (no upstream reachable), ``QueueFull`` (the upstream's 429, with
        its ``Retry-After``) or ``UpstreamError`` (it refused the request)."""
        path, body = self.body(params, prompt, messages, raw)
        client = self._client_for_loop()
        request_id = uuid.uuid4().hex[:16]
        errors: list[str] = []
        for upstream in self._order():
            started = time.monotonic()
            upstream.in_flight += 1
            try:
                request = client.build_request("POST", upstream.url + path, json=body, headers=self._headers(),
                                               timeout=httpx.Timeout(FIRST_BYTE_TIMEOUT, connect=CONNECT_TIMEOUT))
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                upstream.in_flight -= 1
                upstream.mark_down(f"{type(exc).__name__}: {exc}"[:200])
                metrics.UPSTREAM_ERRORS.labels(self.name, upstream.url).inc()
                errors.append(upstream.last_error)
                continue
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                await response.aclose()
                upstream.in_flight -= 1
                message = _error_message(text) or f"HTTP {response.status_code}"
                metrics.UPSTREAM_ERRORS.labels(self.name, upstream.url).inc()
                if response.status_code == 429:
                    upstream.mark_up()
                    raise QueueFull(_retry_after(response.headers.get("Retry-After")))
                if response.status_code >= 500:
                    upstream.mark_down(f"HTTP {response.status_code}: {message}"[:200])
                    errors.append(upstream.last_error)
                    continue
                upstream.mark_up()
                raise UpstreamError(response.status_code, message)
            upstream.mark_up()
            metrics.UPSTREAM_REQUESTS.labels(self.name, upstream.url).inc()
            loop = asyncio.get_running_loop()
            stream = RequestStream(request_id, num_prompt_tokens or 0, loop, self._abort)
            task = loop.create_task(self._relay(upstream, response, stream, started, num_prompt_tokens, log_tag))
            self._running[request_id] = task
            return stream
        raise ModelUnavailable(self.name, "no upstream answers: " + "; ".join(errors[-2:]))

    def _abort(self, request_id: str) -> None:
        task = self._running.get(request_id)
        if task is not None:
            task.cancel()  # closes the upstream connection: it stops generating

    async def _relay(self, upstream: Upstream, response: httpx.Response, stream: RequestStream, started: float,
                     num_prompt_tokens: int | None, log_tag: str) -> None:
        """Upstream chunks -> our stream, then how it finished."""
        usage: dict[str, Any] | None = None
        finish, error, first, pieces, done = "", None, None, 0, False
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                data = json.loads(payload)
                if data.get("error"):
                    error = str((data["error"] or {}).get("message") if isinstance(data["error"], dict)
                                else data["error"])[:200]
                    break
                if isinstance(data.get("usage"), dict):
                    usage = data["usage"]
                for choice in data.get("choices") or []:
                    delta = choice.get("delta") or {}
                    text = delta.get("content") if "delta" in choice else choice.get("text")
                    if text:
                        if first is None:
                            first = time.monotonic()
                            metrics.UPSTREAM_TTFT.labels(self.name, upstream.url).observe(first - started)
                        pieces += 1
                        stream.push([text])
                    if choice.get("finish_reason"):
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
            if error is None and not done and not finish:
                error = "the upstream stream ended early"
        except asyncio.CancelledError:
            finish = "abort"
        except (httpx.HTTPError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            await response.aclose()
            upstream.in_flight -= 1
            self._running.pop(stream.request_id, None)
        if error is not None:
            finish = "error"
        elif not finish:
            finish = "stop"
        if error is not None:
            metrics.UPSTREAM_ERRORS.labels(self.name, upstream.url).inc()
            logger.warning("upstream %s failed mid-stream: %s", upstream.url, error)
        now = time.monotonic()
        prompt_tokens = int((usage or {}).get("prompt_tokens") or num_prompt_tokens or 0)
        completion = int((usage or {}).get("completion_tokens") or pieces)
        stream.push([Finished(finish, Usage(prompt_tokens, completion), first - started if first else None,
                              now - started, error)])
        metrics.REQUESTS.labels(self.name, finish).inc()
        logger.info("request id=%s model=%s upstream=%s token=%s prompt_tokens=%d completion_tokens=%d "
                    "finish_reason=%s", stream.request_id, self.name, upstream.url, log_tag or "-", prompt_tokens,
                    completion, finish)


def _error_message(text: str) -> str:
    """The message of an OpenAI-shaped (or Workers AI-shaped) error body."""
    try:
        data = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("message"))[:500]
    return text[:200]


def _retry_after(value: str | None) -> int:
    try:
        return max(1, min(int(float(value or 1)), 3600))
    except ValueError:
        return 1
