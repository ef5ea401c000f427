"""The pure side of the soak: reading SSE events into an answer, judging an answer complete,
the bad requests and what their answers must be, judging the server's memory flat, and the
printed table and verdict.

One ``Answer`` reads any of the three framings the server speaks: the native one
(``{"response": piece}`` events, then ``{"response": "", "usage": ...}``, then ``[DONE]``), the
OpenAI one (``chat.completion.chunk`` deltas, a closing chunk with ``finish_reason``, a usage chunk,
then ``[DONE]``) and the chat one (native events with ``id:`` offsets, a final event with usage,
``state`` and ``finish_reason``, then ``[DONE]``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .client import Target

KINDS = ("native", "openai", "chat")
FINISH_REASONS = ("stop", "length")
RSS_TOLERANCE = 0.10  # the end may be at most this much above the RSS after the warm-up
UNKNOWN_MODEL = "@cf/nobody/no-such-model"


@dataclass(frozen=True)
class SseEvent:
    data: str
    name: str | None = None  # the ``event:`` line
    id: str | None = None  # the ``id:`` line


class SseParser:
    """Lines in, events out: ``feed`` returns the event a blank line completes (else None)."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._name: str | None = None
        self._id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._name = self._id = None
                return None
            done = SseEvent("\n".join(self._data), self._name, self._id)
            self._data, self._name, self._id = [], None, None
            return done
        if line.startswith(":"):  # a comment (keep-alive)
            return None
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "data":
            self._data.append(value)
        elif key == "event":
            self._name = value
        elif key == "id":
            self._id = value
        return None


def _error_text(data: dict[str, Any]) -> str:
    errors = data.get("errors") or [data.get("error")]
    first = errors[0] if isinstance(errors, list) and errors else errors
    return str(first.get("message") or first) if isinstance(first, dict) else str(first)


@dataclass
class Answer:
    """What one stream said, whatever its framing."""

    text: str = ""
    pieces: int = 0  # events that carried text
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    state: str | None = None  # chat: the message's state in the final event
    done: bool = False  # ``[DONE]`` arrived
    error: str | None = None  # an error event
    offset: int = 0  # chat: the last ``id:``, the characters received so far

    def feed(self, event: SseEvent) -> None:
        if event.id is not None and event.id.isdigit():
            self.offset = int(event.id)
        if event.data == "[DONE]":
            self.done = True
            return
        data = json.loads(event.data)
        if not isinstance(data, dict):
            raise ValueError(f"unexpected event payload: {event.data[:200]}")
        if event.name == "error" or data.get("error") or data.get("errors"):
            self.error = _error_text(data)
            return
        text = data.get("response") or ""
        for choice in data.get("choices") or []:
            text += (choice.get("delta") or {}).get("content") or ""
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if text:
            self.pieces += 1
            self.text += text
        if isinstance(data.get("usage"), dict):
            self.usage = data["usage"]
        self.finish_reason = data.get("finish_reason") or self.finish_reason
        self.state = data.get("state") or self.state


def problem(answer: Answer, kind: str, max_tokens: int) -> str | None:
    """Why an answer read to its end is not complete (None when it is): it must end with usage
    and ``[DONE]``, its usage must add up and fit ``max_tokens``, no more text events than
    completion tokens; OpenAI and chat answers must say why they stopped (``length`` exactly at
    ``max_tokens``), and a chat message must be ``done``."""
    if answer.error is not None:
        return f"error event: {answer.error}"
    if not answer.done:
        return "ended without [DONE]"
    if answer.usage is None:
        return "no usage before [DONE]"
    prompt, completion = answer.usage.get("prompt_tokens"), answer.usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return f"usage without token counts: {answer.usage}"
    if answer.usage.get("total_tokens") != prompt + completion:
        return f"usage does not add up: {answer.usage}"
    if completion > max_tokens:
        return f"{completion} completion tokens for max_tokens {max_tokens}"
    if answer.pieces > completion:
        return f"{answer.pieces} text events for {completion} completion tokens"
    if kind != "native":
        if answer.finish_reason not in FINISH_REASONS:
            return f"finish_reason {answer.finish_reason!r}"
        if answer.finish_reason == "length" and completion != max_tokens:
            return f"finish_reason length at {completion} of max_tokens {max_tokens}"
    if kind == "chat" and answer.state != "done":
        return f"chat message ended in state {answer.state!r}"
    return None


def bad_requests(target: Target, max_body: int) -> list[tuple[str, str, bytes]]:
    """(what, url, body) of each bad request: every one must get a 4xx JSON error."""
    native, openai = f"{target.base_url}/ai/run/{target.model}", target.completions_url
    hi = [{"role": "user", "content": "hi"}]

    def dump(data: dict[str, Any]) -> bytes:
        return json.dumps(data).encode()  # NaN stays NaN: json allows it by default

    return [
        ("NaN temperature", native, dump({"prompt": "hi", "temperature": float("nan"), "stream": True})),
        ("NaN temperature", openai, dump({"model": target.model, "messages": hi, "temperature": float("nan")})),
        ("oversized body", native, dump({"prompt": "x" * (max_body + 4096)})),
        ("wrong types", native, dump({"prompt": 123, "max_tokens": "ten"})),
        ("wrong types", openai, dump({"model": target.model, "messages": "hi", "stream": "yes"})),
        ("unknown model", f"{target.base_url}/ai/run/{UNKNOWN_MODEL}", dump({"prompt": "hi"})),
        ("unknown model", openai, dump({"model": UNKNOWN_MODEL, "messages": hi})),
    ]


def is_json_error(status: int, body: bytes) -> bool:
    """A bad request's answer as the contract wants it: 4xx (not 429) with a JSON error body."""
    if not 400 <= status < 500 or status == 429:
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and bool(data.get("errors") or data.get("error"))


def held_requests(metrics: str) -> int:
    """Requests the engines still run or queue, from the Prometheus text of ``/metrics``."""
    held = 0.0
    for line in metrics.splitlines():
        if line.startswith(("inference_requests_running{", "inference_requests_waiting{")):
            held += float(line.rsplit(" ", 1)[1])
    return int(held)


@dataclass
class Tally:
    """Running counts of the whole soak (what the table shows)."""

    active: int = 0  # streams open now
    completed: int = 0  # read to the end and complete
    disconnected: int = 0  # hung up on by us (chat drops included)
    bad_ok: int = 0  # bad requests answered 4xx JSON
    busy: int = 0  # 429 (queue full): not an error, the client backs off
    server_errors: int = 0  # 5xx
    transport_errors: int = 0  # no answer: connection failed, reset, timed out
    wrong: int = 0  # answers against the contract (a bad request not 4xx JSON, an unexpected status)
    lost: int = 0  # read to the end but not complete; chat messages that did not reach done
    by_kind: dict[str, int] = field(default_factory=dict)  # complete answers per kind
    bad_latency_ms: list[float] = field(default_factory=list)
    samples: dict[str, list[str]] = field(default_factory=dict)  # a few messages per failure kind

    @property
    def errors(self) -> int:
        return self.server_errors + self.transport_errors + self.wrong

    def note(self, kind: str, message: str, keep: int = 5) -> None:
        seen = self.samples.setdefault(kind, [])
        if len(seen) < keep and message not in seen:
            seen.append(message)


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the start
    rss_mb: float | None
    active: int
    completed: int
    disconnected: int
    bad_ok: int
    busy: int
    errors: int
    lost: int

    @classmethod
    def of(cls, t: float, rss_mb: float | None, tally: Tally) -> Sample:
        return cls(t, rss_mb, tally.active, tally.completed, tally.disconnected, tally.bad_ok, tally.busy,
                   tally.errors, tally.lost)


COLUMNS = (("time", 6), ("RSS MB", 8), ("active", 7), ("completed", 10), ("disconnected", 13),
           ("bad ok", 7), ("busy", 6), ("errors", 7), ("lost", 6))


def table_header() -> str:
    return "".join(name.rjust(width) for name, width in COLUMNS)


def table_row(s: Sample) -> str:
    rss = "-" if s.rss_mb is None else f"{s.rss_mb:.1f}"
    cells = (f"{s.t:.0f}s", rss, s.active, s.completed, s.disconnected, s.bad_ok, s.busy, s.errors, s.lost)
    return "".join(str(cell).rjust(width) for cell, (_, width) in zip(cells, COLUMNS))


@dataclass(frozen=True)
class RssVerdict:
    baseline: Sample | None  # the first sample at or after the warm-up (None: the run was too short)
    end: Sample | None
    growth: float | None  # end / baseline - 1

    @property
    def flat(self) -> bool | None:
        return None if self.growth is None else self.growth <= RSS_TOLERANCE


def rss_verdict(samples: list[Sample], warmup_s: float) -> RssVerdict:
    """RSS at the first sample taken at or after ``warmup_s`` against the last sample; not
    judged when no later sample exists or RSS is unknown."""
    measured = [s for s in samples if s.rss_mb is not None]
    baseline = next((s for s in measured if s.t >= warmup_s), None)
    end = measured[-1] if measured else None
    if baseline is None or end is None or end is baseline or not baseline.rss_mb:
        return RssVerdict(baseline, end, None)
    assert end.rss_mb is not None
    return RssVerdict(baseline, end, end.rss_mb / baseline.rss_mb - 1)


def verdict_lines(verdict: RssVerdict, tally: Tally, warmup_s: float, held: int | None) -> list[str]:
    """The closing lines: memory, lost answers, errors, bad requests, the engine after the run."""
    b, e = verdict.baseline, verdict.end
    if b is None or e is None or verdict.growth is None:
        memory = f"RSS: not judged (no sample after the {warmup_s:.0f}s warm-up and before the end)"
    else:
        word = "flat" if verdict.flat else "GREW"
        memory = (f"RSS after warm-up ({b.t:.0f}s): {b.rss_mb:.1f} MB; at the end ({e.t:.0f}s): {e.rss_mb:.1f} MB: "
                  f"{verdict.growth:+.1%}, {word} (limit +{RSS_TOLERANCE:.0%})")
    lost = "0 lost answers" if tally.lost == 0 else f"LOST ANSWERS: {tally.lost}"
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(tally.by_kind.items()))
    latencies = sorted(tally.bad_latency_ms)
    slowest = f", slowest {latencies[-1]:.0f} ms" if latencies else ""
    lines = [
        memory,
        f"{lost} ({tally.completed} complete: {kinds or 'none'}; {tally.disconnected} hung up on by us)",
        f"errors: {tally.errors} ({tally.server_errors} 5xx, {tally.transport_errors} transport, "
        f"{tally.wrong} against the contract); {tally.busy} busy (429)",
        f"bad requests answered 4xx JSON: {tally.bad_ok}{slowest}",
    ]
    if held is not None:
        lines.append(f"engine after the run: {held} requests still running or waiting")
    for kind, messages in sorted(tally.samples.items()):
        lines += [f"  {kind}: {m}" for m in messages]
    return lines


def report(config: dict[str, Any], samples: list[Sample], tally: Tally, verdict: RssVerdict,
           held: int | None) -> dict[str, Any]:
    """What ``--json`` writes."""
    totals = {k: v for k, v in asdict(tally).items() if k != "bad_latency_ms"}
    return {
        "config": config,
        "samples": [asdict(s) for s in samples],
        "totals": totals | {"errors": tally.errors},
        "rss": {"baseline": verdict.baseline and asdict(verdict.baseline),
                "end": verdict.end and asdict(verdict.end), "growth": verdict.growth, "flat": verdict.flat},
        "held_after": held,
    }
