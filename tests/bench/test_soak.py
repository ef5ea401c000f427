"""The soak (``manage.py soak``): what makes an answer complete, when memory counts as flat,
the printed table, how a stream is counted (canned streams, no server), and one short real run."""
from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.client import Target
from bench.soak import Soak
from bench.soak_report import (
    Answer,
    Sample,
    SseEvent,
    SseParser,
    Tally,
    bad_requests,
    held_requests,
    is_json_error,
    problem,
    rss_verdict,
    table_header,
    table_row,
    verdict_lines,
)
from tests.support.server import ROOT, migrated_env

USAGE = {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}


def native(*pieces: str, usage: dict[str, Any] | None = USAGE, done: bool = True) -> list[str]:
    """The data payloads of a native stream."""
    return ([json.dumps({"response": p}) for p in pieces] + ([json.dumps({"response": "", "usage": usage})]
            if usage else []) + (["[DONE]"] if done else []))


def openai(*pieces: str, finish: str | None = "stop", usage: dict[str, Any] = USAGE) -> list[str]:
    def chunk(text: str, reason: str | None = None) -> str:
        return json.dumps({"object": "chat.completion.chunk",
                           "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": reason}]})

    return [chunk(p) for p in pieces] + [chunk("", finish), json.dumps({"choices": [], "usage": usage}), "[DONE]"]


def answer_of(payloads: list[str], name: str | None = None) -> Answer:
    answer = Answer()
    for payload in payloads:
        answer.feed(SseEvent(payload, name if payload != "[DONE]" else None))
    return answer


# reading events -----------------------------------------------------------------------------------------------
def test_parser_reads_events_with_names_and_ids_and_skips_keepalives() -> None:
    parser = SseParser()
    lines = [": keepalive", "", "id: 5", "data: {\"response\": \"Hello\"}", "", "event: error", "data: {}", "",
             "data: [DONE]", ""]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert events == [SseEvent('{"response": "Hello"}', None, "5"), SseEvent("{}", "error", None),
                      SseEvent("[DONE]", None, None)]


def test_a_chat_answer_keeps_the_offset_to_resume_from() -> None:
    answer = Answer()
    answer.feed(SseEvent('{"response": "Hel"}', id="3"))
    answer.feed(SseEvent('{"response": "lo"}', id="5"))
    assert (answer.text, answer.offset, answer.pieces) == ("Hello", 5, 2)


# what a complete answer is ------------------------------------------------------------------------------------
def test_complete_answers_in_each_framing() -> None:
    assert problem(answer_of(native("Hel", "lo", "!")), "native", 3) is None
    assert problem(answer_of(openai("Hel", "lo!")), "openai", 32) is None
    chat = native("Hello")
    chat[-2] = json.dumps({"response": "", "usage": USAGE, "state": "done", "finish_reason": "length"})
    assert problem(answer_of(chat), "chat", 3) is None


@pytest.mark.parametrize(("payloads", "kind", "max_tokens", "expected"), [
    (native("Hel", "lo", done=False), "native", 32, "ended without [DONE]"),
    (native("Hel", usage=None), "native", 32, "no usage before [DONE]"),
    (native("a", usage={"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 99}), "native", 32,
     "usage does not add up"),
    (native("a"), "native", 2, "3 completion tokens for max_tokens 2"),
    (native("a", "b", "c", "d"), "native", 32, "4 text events for 3 completion tokens"),
    (openai("a", finish=None), "openai", 32, "finish_reason None"),
    (openai("a", finish="length"), "openai", 32, "finish_reason length at 3 of max_tokens 32"),
    (native("a"), "chat", 32, "finish_reason None"),
])
def test_incomplete_answers_say_why(payloads: list[str], kind: str, max_tokens: int, expected: str) -> None:
    assert (problem(answer_of(payloads), kind, max_tokens) or "").startswith(expected)


def test_an_error_event_or_a_stopped_chat_message_is_not_complete() -> None:
    failed = answer_of(['{"errors": [{"code": 3050, "message": "Generation failed"}]}'], name="error")
    assert problem(failed, "native", 32) == "error event: Generation failed"
    stopped = answer_of([json.dumps({"response": "", "usage": USAGE, "state": "stopped", "finish_reason": "stop"}),
                         "[DONE]"])
    assert problem(stopped, "chat", 32) == "chat message ended in state 'stopped'"


def test_bad_requests_must_get_a_4xx_json_error() -> None:
    assert is_json_error(400, b'{"success": false, "errors": [{"code": 5004, "message": "x"}]}')
    assert is_json_error(404, b'{"error": {"message": "no such model"}}')
    assert not is_json_error(500, b'{"errors": [{"code": 3050}]}')
    assert not is_json_error(429, b'{"errors": [{"code": 3040}]}')
    assert not is_json_error(400, b"<html>Bad Request</html>")
    assert not is_json_error(200, b'{"result": {}}')


def test_the_bad_requests_are_what_they_say() -> None:
    bad = bad_requests(Target("ours", "http://h", "@cf/m/x", "t"), max_body=1024)
    assert {what for what, _, _ in bad} == {"NaN temperature", "oversized body", "wrong types", "unknown model"}
    for what, url, body in bad:
        if what == "NaN temperature":
            assert math.isnan(json.loads(body)["temperature"])
        if what == "oversized body":
            assert len(body) > 1024
        if what == "unknown model":
            assert "no-such-model" in url + body.decode()


# memory and the table -----------------------------------------------------------------------------------------
def sample(t: float, rss: float | None, lost: int = 0) -> Sample:
    return Sample(t, rss, active=64, completed=10, disconnected=3, bad_ok=2, busy=0, errors=0, lost=lost)


def test_rss_is_judged_from_the_first_sample_after_the_warm_up_to_the_last() -> None:
    samples = [sample(10, 500.0), sample(60, 800.0), sample(70, 820.0), sample(300, 870.0)]
    verdict = rss_verdict(samples, warmup_s=60)
    assert verdict.baseline == samples[1] and verdict.end == samples[-1]
    assert verdict.growth == pytest.approx(0.0875) and verdict.flat is True
    assert rss_verdict([*samples, sample(310, 881.0)], 60).flat is False  # +10.1%
    assert rss_verdict(samples, warmup_s=0).flat is False  # from 500 MB: the warm-up itself is growth


def test_rss_is_not_judged_without_a_sample_after_the_warm_up() -> None:
    assert rss_verdict([sample(10, 500.0), sample(20, 900.0)], warmup_s=60).flat is None
    assert rss_verdict([sample(10, 500.0), sample(70, 600.0)], warmup_s=60).flat is None  # the last is the baseline
    assert rss_verdict([sample(70, None), sample(80, None)], warmup_s=60).flat is None


def test_table_rows_line_up_under_the_header() -> None:
    header = table_header()
    row = table_row(Sample(120.4, 812.34, active=64, completed=1234, disconnected=310, bad_ok=95, busy=2, errors=1,
                           lost=0))
    assert header.split() == ["time", "RSS", "MB", "active", "completed", "disconnected", "bad", "ok", "busy",
                              "errors", "lost"]
    assert row.split() == ["120s", "812.3", "64", "1234", "310", "95", "2", "1", "0"]
    assert len(row) == len(header)
    for name, cell in [("MB", "812.3"), ("completed", "1234"), ("disconnected", "310")]:  # right-aligned under it
        assert header.index(name) + len(name) == row.index(cell) + len(cell)
    assert table_row(Sample(5, None, 0, 0, 0, 0, 0, 0, 0)).split()[1] == "-"


def test_the_verdict_says_flat_and_counts_lost_answers() -> None:
    verdict = rss_verdict([sample(60, 800.0), sample(300, 820.0)], 60)
    tally = Tally(completed=100, disconnected=20, bad_ok=7, server_errors=1, by_kind={"native": 60, "chat": 40},
                  bad_latency_ms=[12.0, 30.0])
    tally.note("5xx", "boom")
    lines = verdict_lines(verdict, tally, 60, held=0)
    assert lines[0] == "RSS after warm-up (60s): 800.0 MB; at the end (300s): 820.0 MB: +2.5%, flat (limit +10%)"
    assert lines[1] == "0 lost answers (100 complete: chat 40, native 60; 20 hung up on by us)"
    assert lines[2].startswith("errors: 1 (1 5xx, 0 transport")
    assert "slowest 30 ms" in lines[3] and "engine after the run: 0 requests" in lines[4] and lines[5] == "  5xx: boom"
    grew = verdict_lines(rss_verdict([sample(60, 800.0), sample(300, 900.0)], 60), Tally(lost=2), 60, None)
    assert "GREW" in grew[0] and grew[1].startswith("LOST ANSWERS: 2")


def test_held_requests_sums_running_and_waiting_over_models() -> None:
    text = ('# HELP inference_requests_running x\ninference_requests_running{model="a"} 2.0\n'
            'inference_requests_waiting{model="a"} 1.0\ninference_requests_running{model="b"} 0.0\n'
            'inference_requests_total{model="a",outcome="ok"} 7.0\n')
    assert held_requests(text) == 3


# counting streams (canned answers) ----------------------------------------------------------------------------------
def soak_with(status: int, payloads: list[str]) -> Soak:
    body = b"".join(f"data: {p}\n\n".encode() for p in payloads)
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    client = httpx.AsyncClient(transport=transport)
    options = {"seed": 0, "duration": 1.0, "timeout": 10.0, "max_tokens": 32}
    return Soak(Target("ours", "http://h", "m", "t", 1), client, client, "csrf", options, max_body=1024)


def read(soak: Soak, hang_after: int | None) -> tuple[bool | None, Answer]:
    answer = Answer()
    return asyncio.run(soak.read(soak.api, "POST", "http://h/ai/run/m", answer, hang_after)), answer


def test_a_stream_read_to_its_end_and_one_we_hung_up_on() -> None:
    soak = soak_with(200, native("a", "b", "c"))
    ended, answer = read(soak, None)
    assert ended is False and problem(answer, "native", 32) is None
    cut, partial = read(soak, 2)
    assert cut is True and partial.text == "ab" and soak.tally.active == 0
    assert read(soak, 5)[0] is False  # it ended before the fifth event


def test_statuses_other_than_200_are_counted() -> None:
    soak = soak_with(500, ['{"errors": []}'])
    assert read(soak, None)[0] is None and soak.tally.server_errors == 1
    soak = soak_with(409, ['{"errors": []}'])
    assert read(soak, None)[0] is None and soak.tally.wrong == 1 and soak.tally.errors == 1


# one short real run -----------------------------------------------------------------------------------------------
@pytest.mark.server
@pytest.mark.model
def test_a_short_soak_loses_no_answer(tmp_path: Path) -> None:
    env = migrated_env(tmp_path)
    out_path = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, "manage.py", "soak", "--streams", "4", "--duration", "15", "--sample", "5", "--warmup", "5",
         "--max-tokens", "48", "--timeout", "120", "--json", str(out_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out_path.read_text())
    totals = report["totals"]
    assert totals["lost"] == 0 and totals["server_errors"] == 0, totals
    assert totals["completed"] + totals["disconnected"] > 0 and totals["active"] == 0
    assert report["samples"] and all(s["rss_mb"] > 0 for s in report["samples"])
    assert report["held_after"] == 0
    assert "lost answers" in run.stdout and table_header() in run.stdout
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:  # the token and the chat conversations are gone
        assert db.execute("select count(*) from chat_apitoken").fetchone()[0] == 0
        assert db.execute("select count(*) from chat_conversation").fetchone()[0] == 0
