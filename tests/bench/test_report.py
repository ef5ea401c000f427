"""Figures, ratios, acceptance and the printed report, from hand-made results (no server)."""
from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from bench.cli import add_arguments, parse_levels, parse_scenarios, run, validate
from bench.report import analyze, compare, fmt, ratio, render
from bench.scenarios import SCENARIOS
from bench.server import BenchError


def level(system: str, n: int, tok_s: float, ttft95: float = 500.0, errors: int = 0) -> dict[str, Any]:
    return {"system": system, "concurrency": n, "requests": n, "errors": errors, "prompt_tokens": 30 * n,
            "completion_tokens": 128 * n, "wall_s": 128 * n / tok_s, "ttft_p50_ms": ttft95 / 2,
            "ttft_p95_ms": ttft95, "itl_p50_ms": 40.0, "itl_p95_ms": 60.0, "tpot_ms": 30.0,
            "aggregate_tokens_per_s": tok_s,
            "error_samples": ["boom"] if errors else [], "other_cpu_cores": 0.01}


def results(system: str, scale: float, pid: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "streams": [level(system, 1, 25.0 * scale), level(system, 16, 150.0 * scale, ttft95=1600.0)],
        "long-prompt": {"prompt_tokens": 2010, "ttft_ms": 4000.0 / scale, "total_ms": 4100.0 / scale,
                        "prompt_tokens_per_s": 500.0 * scale, "error": None, "other_cpu_cores": None},
        "interference": {"streams": 4, "long_prompt_tokens": 4000, "long_prompt_ms": 9000.0,
                         "long_prompt_tokens_per_s": 444.0 * scale, "itl_p50_idle_ms": 50.0, "itl_p95_idle_ms": 70.0,
                         "itl_p95_during_ms": 300.0, "itl_max_during_ms": 350.0, "gaps_idle": 400,
                         "gaps_during": 80, "errors": 0, "error_samples": [], "other_cpu_cores": 0.5},
        "multi-turn": {"turns": 5, "ttft_ms": [200.0, 150.0, 160.0, 170.0, 180.0], "prompt_tokens": [1, 2, 3, 4, 5],
                       "last_vs_first": 0.9, "error": None, "other_cpu_cores": None},
        "rss": None,
    }
    if pid:
        out["rss"] = {"pid": 1, "prompt_tokens": 4000, "rss_before_mb": 700.0, "rss_after_mb": 750.0,
                      "delta_mb": 50.0, "peak_mb": 760.0, "error": None}
        out["memory_at_end"] = {"rss_mb": 800.0, "peak_mb": 900.0}
    return out


def report(peer: bool = True, naive: bool = False) -> dict[str, Any]:
    targets = {"ours": {"url": "u", "model": "m", "pid": 1, "where": "x", "results": results("ours", 2.0)}}
    if peer:
        targets["peer"] = {"url": "p", "model": "pm", "pid": None, "where": "peer",
                           "results": results("peer", 1.0, pid=False)}
    rep: dict[str, Any] = {"machine": {}, "config": {}, "targets": targets, "naive": None}
    if naive:
        rep["naive"] = {"levels": [level("naive", 1, 20.0), level("naive", 16, 10.0)], "note": None}
    return analyze(rep)


def test_fmt_and_ratio() -> None:
    assert (fmt(None, "ms"), fmt(12.6, "ms"), fmt(12.64, "tok/s"), fmt(1.234, "x")) == ("-", "13", "12.6", "1.23x")
    assert ratio(2.0, 1.0) == 2.0 and ratio(None, 1.0) is None and ratio(1.0, 0.0) is None


def test_compare_rows_and_ratios() -> None:
    rows = {r["figure"]: r for r in compare(results("ours", 2.0), results("peer", 1.0, pid=False))}
    agg = rows["streams x16: aggregate"]
    assert (agg["ours"], agg["peer"], agg["ratio"], agg["better"]) == (300.0, 150.0, 2.0, "higher")
    assert rows["long prompt: TTFT"]["ratio"] == pytest.approx(0.5) and rows["long prompt: TTFT"]["better"] == "lower"
    assert rows["multi-turn: turn 5 / turn 1"]["ours"] == 0.9
    growth = rows["rss: growth"]  # the peer's PID is unknown
    assert growth["ours"] == 50.0 and growth["peer"] is None and growth["ratio"] is None
    alone = compare(results("ours", 1.0), None)
    assert all(r["peer"] is None and r["ratio"] is None for r in alone)


def test_analyze_scaling_naive_and_acceptance() -> None:
    rep = report(naive=True)
    assert rep["scaling"]["ours"] == {16: pytest.approx(6.0)} and rep["scaling"]["naive"] == {16: 0.5}
    assert rep["ours_vs_naive"] == {1: 2.5, 16: 30.0}
    assert rep["acceptance"]["pass"] and rep["acceptance"]["ttft_p95_ms_at_16"] == 1600.0
    bad = report()
    bad["targets"]["ours"]["results"]["streams"][1] = level("ours", 16, 60.0, ttft95=5000.0)
    acc = analyze(bad)["acceptance"]
    assert not acc["scaling_ok"] and not acc["ttft_ok"] and not acc["pass"]
    no16 = report()
    no16["targets"]["ours"]["results"]["streams"] = [level("ours", 1, 25.0)]
    assert analyze(no16)["acceptance"] is None
    json.dumps(rep)


def test_render_side_by_side() -> None:
    text = "\n".join(render(report(naive=True)))
    assert "TTFT p95" in text and "ours/peer" in text
    line = next(li for li in text.splitlines() if li.startswith("streams x16: aggregate (tok/s)"))
    assert line.split()[-4:] == ["300.0", "150.0", "2.00x", "higher"]
    assert "peer rss: skipped" in text
    assert "Warning: other processes used more than 0.25 cores during ours interference" in text
    assert "Scaling, aggregate tok/s at N / at 1 (ours): x16: 6.00x" in text
    assert "Ours / naive, aggregate tok/s at the same level: x1: 2.50x, x16: 30.00x" in text
    assert "Batching check: aggregate at 16 / at 1 = 6.00x (>= 4x: PASS)" in text
    assert "  16 streams, TTFT p95 (ms): 1600 (<= 1000: FAIL)" in text
    assert "  one stream, tokens/s vs the peer: 2.00x (>= 1.0x: PASS)" in text


def test_engine_goals_judge_what_the_run_measured() -> None:
    goals = {g["goal"]: (round(g["value"], 2), g["ok"]) for g in report()["goals"]}
    assert goals == {
        "one stream, tokens/s vs the peer": (2.0, True),
        "16 streams, aggregate tokens/s vs the peer": (2.0, True),
        "16 streams, TTFT p95 (ms)": (1600.0, False),
        "long prompt, prompt tokens/s vs the peer": (2.0, True),
        "RSS growth after one long request (MB)": (50.0, True),
        "multi-turn, last turn's TTFT / turn 1": (0.9, True),
        "streams' ITL p95 during a long prompt / idle": (4.29, False),  # 300 ms during, 70 idle
    }
    slower = report()
    slower["targets"]["peer"]["results"]["streams"][0] = level("peer", 1, 60.0)  # ours 50: 0.83x
    assert next(g for g in analyze(slower)["goals"] if g["goal"].startswith("one stream"))["ok"] is False
    # without a peer, only the goals that need none are judged
    alone = {g["goal"] for g in report(peer=False)["goals"]}
    assert alone == {"16 streams, TTFT p95 (ms)", "RSS growth after one long request (MB)",
                     "multi-turn, last turn's TTFT / turn 1", "streams' ITL p95 during a long prompt / idle"}


def test_render_ours_alone() -> None:
    lines = render(report(peer=False))
    header = next(li for li in lines if li.startswith("figure"))
    assert header.split() == ["figure", "ours"]
    assert not any(li.startswith("peer") for li in lines)


def test_parse_levels_and_scenarios() -> None:
    assert parse_levels("1,4,16") == [1, 4, 16]
    with pytest.raises(argparse.ArgumentTypeError, match="levels"):
        parse_levels("0,4")
    assert parse_scenarios("all") == list(SCENARIOS) and "naive" not in SCENARIOS
    assert parse_scenarios("streams, naive,streams") == ["streams", "naive"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown scenario"):
        parse_scenarios("streams,bogus")


def options(*argv: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return vars(parser.parse_args(argv))


def test_defaults_and_validation() -> None:
    opts = options()
    assert opts["levels"] == [1, 16] and opts["scenarios"] == list(SCENARIOS) and opts["max_tokens"] == 128
    assert (opts["long_prompt_tokens"], opts["turns"], opts["turn_tokens"]) == (2000, 5, 64)
    validate(opts)
    for argv, message in [(("--url", "http://x"), "go together"), (("--peer-pid", "3"), "need --peer"),
                          (("--max-tokens", "0"), ">= 1"), (("--server-pid", "3"), "--url")]:
        with pytest.raises(BenchError, match=message):
            validate(options(*argv))


def test_an_unreachable_peer_fails_before_any_work() -> None:
    lines: list[str] = []
    with pytest.raises(BenchError, match="cannot list its models"):
        run(options("--peer", "http://127.0.0.1:1"), lines.append, lines.append)
    assert lines == []  # nothing started, nothing printed
