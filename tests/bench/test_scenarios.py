"""Scenarios, prompts and results against canned OpenAI streams (no server)."""
from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest

from bench import scenarios
from bench.client import RequestResult, Target
from bench.machine import memory_mb, parse_status_kb
from bench.prompts import CHARS_PER_TOKEN, first_turn, long_prompt, prompt_for, story_text
from bench.scenarios import BenchConfig, LevelResult, split_gaps
from tests.support.sse import DONE, encode_sse


def fake_server(monkeypatch: pytest.MonkeyPatch, answer: str = "one two") -> list[dict[str, Any]]:
    """Every client the scenarios make talks to a handler that streams ``answer`` word by word
    (plus the number of messages it got) with usage; returns the request bodies it saw."""
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        words = [*answer.split(), str(len(body["messages"]))][: body["max_tokens"]]
        prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 4
        events = [{"choices": [{"delta": {"content": w + " "}}]} for w in words]
        events.append({"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(words)}})
        return httpx.Response(200, content=encode_sse(*events, DONE), headers={"content-type": "text/event-stream"})

    def make_client(concurrency: int, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(handler))

    monkeypatch.setattr(scenarios, "make_client", make_client)
    monkeypatch.setattr("bench.client.make_client", make_client)
    return seen


TARGET = Target("ours", "http://test", "m", token="t", pid=os.getpid())


def cfg(**kw: Any) -> BenchConfig:
    return BenchConfig(run_id="test", **{"levels": [1, 2], "max_tokens": 3, "warmup": 0, "timeout": 10,
                                          "long_prompt_tokens": 100, "turns": 3, "turn_tokens": 4, **kw})


def test_prompts_are_distinct_per_tag_and_sized() -> None:
    assert prompt_for(0, "a") != prompt_for(0, "b") and prompt_for(0, "a") == prompt_for(0, "a")
    assert story_text(200, "a") != story_text(200, "b")
    for tokens in (200, 2000):
        assert abs(len(long_prompt(tokens, "x")) / CHARS_PER_TOKEN - tokens) < 0.1 * tokens
    assert first_turn("a").startswith("[a]")


def test_split_gaps_by_window() -> None:
    r = RequestResult(index=0, started=0.0, piece_times=[1.0, 2.0, 5.0, 6.0])
    idle, during = split_gaps([r], (1.5, 4.5))  # gaps 1-2 and 2-5 overlap it, 5-6 does not
    assert idle == [1000.0] and sorted(during) == [1000.0, 3000.0]
    assert split_gaps([r], (3.0, 4.0)) == ([1000.0, 1000.0], [3000.0])


def test_level_result_pools_rounds() -> None:
    def req(i: int, start: float, times: list[float], tokens: int, error: str | None = None) -> RequestResult:
        return RequestResult(index=i, started=start, finished=times[-1], piece_times=times,
                             completion_tokens=tokens, prompt_tokens=10, error=error)

    rounds = [[req(0, 0.0, [0.1, 0.2, 0.3], 3), req(1, 0.0, [0.2, 0.4, 1.0], 3)],
              [req(0, 5.0, [5.5, 6.0], 2, error="boom")]]
    r = LevelResult.from_rounds("ours", 2, rounds)
    assert (r.requests, r.errors, r.completion_tokens, r.prompt_tokens) == (3, 1, 6, 20)
    assert r.wall_s == pytest.approx(1.0 + 1.0)
    assert r.aggregate_tokens_per_s == pytest.approx(3.0) and r.ttft_p50_ms == pytest.approx(150.0)
    assert r.tpot_ms == pytest.approx((100.0 + 400.0) / 2)  # (last - first) / (tokens - 1), mean
    assert r.error_samples == ["boom"]


def test_streams_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = fake_server(monkeypatch)
    lines: list[str] = []
    levels = scenarios.run_streams(TARGET, cfg(), lines.append)
    assert [(r.concurrency, r.requests, r.errors, r.completion_tokens) for r in levels] == [(1, 1, 0, 3), (2, 2, 0, 6)]
    assert len({b["messages"][0]["content"] for b in seen}) == 3  # distinct prompts
    assert all(b["stream"] and b["temperature"] == 0 and b["model"] == "m" for b in seen)
    assert "ours streams x2" in lines[1]


def test_multi_turn_sends_the_whole_history(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = fake_server(monkeypatch)
    r = scenarios.run_multi_turn(TARGET, cfg())
    assert r.turns == 3 and len(r.ttft_ms) == 3 and r.error is None and r.last_vs_first is not None
    assert [len(b["messages"]) for b in seen] == [1, 3, 5] and all(b["max_tokens"] == 4 for b in seen)
    assert [m["role"] for m in seen[2]["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert seen[2]["messages"][1]["content"] == "one two 1 " and seen[2]["messages"][3]["content"] == "one two 3 "
    assert r.prompt_tokens[0] < r.prompt_tokens[2]


def test_long_prompt_interference_and_rss(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = fake_server(monkeypatch)
    lp = scenarios.run_long_prompt(TARGET, cfg())
    assert lp.error is None and lp.prompt_tokens > 50 and lp.prompt_tokens_per_s and lp.prompt_tokens_per_s > 0
    assert seen[-1]["max_tokens"] == 1
    it = scenarios.run_interference(TARGET, cfg(interference_streams=2))
    assert it.streams == 2 and it.errors == 0 and it.long_prompt_tokens > lp.prompt_tokens
    assert seen[-1]["max_tokens"] == 1 and len(seen) == 1 + 3
    rss = scenarios.run_rss(TARGET, cfg())
    assert rss is not None and rss.pid == os.getpid() and rss.rss_before_mb and rss.delta_mb is not None
    assert scenarios.run_rss(Target("peer", "http://test", "m"), cfg()) is None


def test_run_target_runs_the_selection_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_server(monkeypatch)
    lines: list[str] = []
    results = scenarios.run_target(TARGET, cfg(warmup=1), ["streams", "multi-turn", "rss"], lines.append)
    assert list(results) == ["rss", "streams", "multi-turn", "memory_at_end"]
    assert results["streams"][0]["concurrency"] == 1 and results["rss"]["pid"] == os.getpid()
    json.dumps(results)  # JSON-ready


def test_status_parsing() -> None:
    text = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n"
    assert parse_status_kb(text, "VmRSS") == 102400 and parse_status_kb(text, "VmSwap") is None
    mem = memory_mb(os.getpid())
    assert mem["rss_mb"] and mem["peak_mb"] and mem["peak_mb"] >= mem["rss_mb"]
    assert memory_mb(2**22 + 12345) == {"rss_mb": None, "peak_mb": None}
