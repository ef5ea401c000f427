"""The scenarios, each run against one server (``Target``) at a time, with the same prompts and
the same client for every server.

- ``streams``: N streaming requests at once per level: aggregate completion tokens/s,
  time to first token (TTFT) and inter-token latency (ITL) percentiles.
- ``long-prompt``: one request with a long prompt and ``max_tokens`` 1: prompt tokens/s.
- ``interference``: a few streams decode; a prompt twice as long arrives meanwhile: their ITL
  while it is processed against the rest of the time, and its prompt tokens/s.
- ``multi-turn``: one conversation, each turn sending the whole history: TTFT per turn.
- ``rss``: the server's resident memory before and after one long request (known PID only).
- ``structured``: 16 streams at once under a JSON Schema (``response_format``, eight people each):
  how many answers validate, aggregate tokens/s, and, from the server's ``/metrics`` where it
  has ours, what masking costs per step against the whole step.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from .client import Messages, RequestResult, Target, make_client, percentile, stream_chat, stream_many
from .machine import CpuMeter, memory_mb
from .prompts import first_turn, follow_up, long_prompt, prompt_for

SCENARIOS = ("streams", "long-prompt", "interference", "multi-turn", "rss", "structured")  # default set
OPTIONAL_SCENARIOS = ("naive",)  # the transformers baseline: slow, only when asked for
RUN_ORDER = ("rss", "streams", "long-prompt", "interference", "multi-turn", "structured")  # rss first: fresh


@dataclass
class BenchConfig:
    """What every server is asked, identical for all of them."""

    run_id: str  # makes every text of this run distinct from any earlier run's
    levels: list[int] = field(default_factory=lambda: [1, 16])
    max_tokens: int = 128  # of every streams and interference request
    rounds: int = 1
    warmup: int = 1
    timeout: float = 300.0
    long_prompt_tokens: int = 2000  # interference and rss send twice as many
    interference_streams: int = 4
    turns: int = 5
    turn_tokens: int = 64

    def tag(self, *parts: object) -> str:
        return "-".join([self.run_id, *(str(p) for p in parts)])


def user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _errors(results: list[RequestResult]) -> list[str]:
    return sorted({r.error for r in results if r.error})[:3]


# streams ---------------------------------------------------------------------------------------
@dataclass
class LevelResult:
    """Metrics of one concurrency level of one system (ours, peer or naive)."""

    system: str
    concurrency: int
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    tpot_ms: float | None  # mean time per output token after the first
    aggregate_tokens_per_s: float
    error_samples: list[str] = field(default_factory=list)
    # cores' worth of CPU used by processes other than the system under test and this command
    # while the level ran (None when unknown): tells a disturbed measurement
    other_cpu_cores: float | None = None

    @classmethod
    def from_rounds(cls, system: str, concurrency: int, rounds: list[list[RequestResult]]) -> LevelResult:
        """Pool the requests of every round; throughput is total tokens over total wall time."""
        results = [r for rnd in rounds for r in rnd]
        ok = [r for r in results if r.error is None]
        wall = sum(max(r.finished for r in rnd) - min(r.started for r in rnd) for rnd in rounds if rnd)
        ttfts = [t * 1000 for r in ok if (t := r.ttft) is not None]
        gaps = [g * 1000 for r in ok for g in r.gaps]
        tpots = [t * 1000 for r in ok if (t := r.tpot) is not None]
        tokens = sum(r.completion_tokens for r in ok)
        return cls(
            system=system, concurrency=concurrency, requests=len(results), errors=len(results) - len(ok),
            prompt_tokens=sum(r.prompt_tokens for r in ok), completion_tokens=tokens, wall_s=wall,
            ttft_p50_ms=percentile(ttfts, 50), ttft_p95_ms=percentile(ttfts, 95),
            itl_p50_ms=percentile(gaps, 50), itl_p95_ms=percentile(gaps, 95),
            tpot_ms=sum(tpots) / len(tpots) if tpots else None,
            aggregate_tokens_per_s=tokens / wall if wall > 0 else 0.0, error_samples=_errors(results),
        )


def streams_conversations(cfg: BenchConfig, level: int, round_: object) -> list[Messages]:
    return [user(prompt_for(i, cfg.tag("streams", level, round_, i))) for i in range(level)]


def run_streams(target: Target, cfg: BenchConfig, progress: Callable[[str], None]) -> list[LevelResult]:
    out: list[LevelResult] = []
    for level in cfg.levels:
        meter = _meter(target)
        rounds = [asyncio.run(stream_many(target, streams_conversations(cfg, level, k), cfg.max_tokens, cfg.timeout))
                  for k in range(cfg.rounds)]
        result = LevelResult.from_rounds(target.name, level, rounds)
        result.other_cpu_cores = meter.stop()
        progress(level_line(result))
        out.append(result)
    return out


def level_line(r: LevelResult) -> str:
    ttft = "-" if r.ttft_p95_ms is None else f"{r.ttft_p95_ms:.0f}"
    cpu = "-" if r.other_cpu_cores is None else f"{r.other_cpu_cores:.2f}"
    return (f"  {r.system} streams x{r.concurrency}: {r.completion_tokens} tokens in {r.wall_s:.1f}s "
            f"= {r.aggregate_tokens_per_s:.1f} tok/s, TTFT p95 {ttft} ms, errors {r.errors}, other CPU {cpu} cores")


# long prompt ---------------------------------------------------------------------------------------
@dataclass
class LongPromptResult:
    prompt_tokens: int
    ttft_ms: float | None
    total_ms: float
    prompt_tokens_per_s: float | None  # prompt_tokens / (TTFT, or the whole request when no text came)
    error: str | None = None
    other_cpu_cores: float | None = None


def prompt_rate(r: RequestResult) -> float | None:
    elapsed = r.ttft if r.ttft is not None else r.total
    if r.error or r.prompt_tokens <= 0 or elapsed <= 0:
        return None
    return r.prompt_tokens / elapsed


def run_long_prompt(target: Target, cfg: BenchConfig) -> LongPromptResult:
    meter = _meter(target)
    [r] = asyncio.run(stream_many(target, [user(long_prompt(cfg.long_prompt_tokens, cfg.tag("long")))], 1,
                                  cfg.timeout))
    return LongPromptResult(prompt_tokens=r.prompt_tokens, ttft_ms=_ms(r.ttft), total_ms=r.total * 1000,
                            prompt_tokens_per_s=prompt_rate(r), error=r.error, other_cpu_cores=meter.stop())


# interference ------------------------------------------------------------------------------------------
@dataclass
class InterferenceResult:
    streams: int
    long_prompt_tokens: int
    long_prompt_ms: float | None  # from sending it to its first token (or its end)
    long_prompt_tokens_per_s: float | None
    itl_p50_idle_ms: float | None  # the streams' gaps entirely before or after that window
    itl_p95_idle_ms: float | None
    itl_p95_during_ms: float | None  # their gaps overlapping the window
    itl_max_during_ms: float | None
    gaps_idle: int
    gaps_during: int
    errors: int
    error_samples: list[str] = field(default_factory=list)
    other_cpu_cores: float | None = None


def split_gaps(streams: list[RequestResult], window: tuple[float, float]) -> tuple[list[float], list[float]]:
    """The streams' inter-token gaps (ms) outside ``window`` and overlapping it."""
    idle: list[float] = []
    during: list[float] = []
    w0, w1 = window
    for r in streams:
        for a, b in r.gap_spans():
            (during if b > w0 and a < w1 else idle).append((b - a) * 1000)
    return idle, during


async def _interference(target: Target, cfg: BenchConfig) -> tuple[list[RequestResult], RequestResult]:
    n = cfg.interference_streams
    threshold = max(1, cfg.max_tokens // 4)  # the long prompt arrives a quarter into the streams
    counts: dict[int, int] = {}
    trigger = asyncio.Event()

    def on_piece(r: RequestResult) -> None:
        counts[r.index] = len(r.piece_times)
        if len(counts) == n and min(counts.values()) >= threshold:
            trigger.set()

    async with make_client(n + 1, cfg.timeout) as client:
        tasks = [asyncio.create_task(stream_chat(client, target, user(prompt_for(i, cfg.tag("interference", i))),
                                                 cfg.max_tokens, i, cfg.timeout, on_piece)) for i in range(n)]
        streams_done = asyncio.ensure_future(asyncio.gather(*tasks))
        streams_done.add_done_callback(lambda _: trigger.set())  # too short to reach the threshold
        await trigger.wait()
        text = long_prompt(2 * cfg.long_prompt_tokens, cfg.tag("interference", "long"))
        long = await stream_chat(client, target, user(text), 1, n, cfg.timeout)
        return list(await streams_done), long


def run_interference(target: Target, cfg: BenchConfig) -> InterferenceResult:
    meter = _meter(target)
    streams, long = asyncio.run(_interference(target, cfg))
    window = (long.started, long.piece_times[0] if long.piece_times else long.finished)
    ok = [r for r in streams if r.error is None]
    idle, during = split_gaps(ok, window)
    return InterferenceResult(
        streams=len(streams), long_prompt_tokens=long.prompt_tokens,
        long_prompt_ms=None if long.error else (window[1] - window[0]) * 1000,
        long_prompt_tokens_per_s=prompt_rate(long),
        itl_p50_idle_ms=percentile(idle, 50), itl_p95_idle_ms=percentile(idle, 95),
        itl_p95_during_ms=percentile(during, 95), itl_max_during_ms=max(during) if during else None,
        gaps_idle=len(idle), gaps_during=len(during),
        errors=len(streams) - len(ok) + (1 if long.error else 0), error_samples=_errors([*streams, long]),
        other_cpu_cores=meter.stop(),
    )


# multi-turn ----------------------------------------------------------------------------------------
@dataclass
class MultiTurnResult:
    turns: int  # answered
    ttft_ms: list[float | None]
    prompt_tokens: list[int]
    last_vs_first: float | None  # TTFT of the last turn / of the first
    error: str | None = None
    other_cpu_cores: float | None = None


async def _conversation(target: Target, cfg: BenchConfig) -> list[RequestResult]:
    messages = user(first_turn(cfg.tag("multi-turn")))
    results: list[RequestResult] = []
    async with make_client(1, cfg.timeout) as client:
        for turn in range(1, cfg.turns + 1):
            r = await stream_chat(client, target, list(messages), cfg.turn_tokens, turn, cfg.timeout)
            results.append(r)
            if r.error:
                break
            messages += [{"role": "assistant", "content": r.text or "..."},
                         {"role": "user", "content": follow_up(turn + 1)}]
    return results


def run_multi_turn(target: Target, cfg: BenchConfig) -> MultiTurnResult:
    meter = _meter(target)
    results = asyncio.run(_conversation(target, cfg))
    ok = [r for r in results if r.error is None]
    ttfts = [_ms(r.ttft) for r in ok]
    first, last = (ttfts[0], ttfts[-1]) if len(ttfts) >= 2 else (None, None)
    return MultiTurnResult(
        turns=len(ok), ttft_ms=ttfts, prompt_tokens=[r.prompt_tokens for r in ok],
        last_vs_first=last / first if first and last is not None else None,
        error=next((r.error for r in results if r.error), None), other_cpu_cores=meter.stop(),
    )


# rss ------------------------------------------------------------------------------------------------
@dataclass
class RssResult:
    pid: int
    prompt_tokens: int
    rss_before_mb: float | None
    rss_after_mb: float | None
    delta_mb: float | None
    peak_mb: float | None  # the process's high-water mark after the request
    error: str | None = None


def run_rss(target: Target, cfg: BenchConfig) -> RssResult | None:
    """None without a known PID (a server given by URL alone)."""
    if target.pid is None:
        return None
    before = memory_mb(target.pid)
    text = long_prompt(2 * cfg.long_prompt_tokens, cfg.tag("rss"))
    [r] = asyncio.run(stream_many(target, [user(text)], 1, cfg.timeout))
    after = memory_mb(target.pid)
    b, a = before["rss_mb"], after["rss_mb"]
    return RssResult(pid=target.pid, prompt_tokens=r.prompt_tokens, rss_before_mb=b, rss_after_mb=a,
                     delta_mb=a - b if a is not None and b is not None else None, peak_mb=after["peak_mb"],
                     error=r.error)


# one server, every scenario --------------------------------------------------------------------------
# structured output ----------------------------------------------------------------------------------
STRUCTURED_STREAMS = 16
STRUCTURED_MAX_TOKENS = 512
GUIDED_SERIES = ("inference_guided_steps_total", "inference_guided_rows_total", "inference_guided_mask_seconds_total",
                 "inference_guided_step_seconds_total")


@dataclass
class StructuredResult:
    system: str
    streams: int
    valid: int  # answers that parse and validate against their schema
    errors: int
    completion_tokens: int
    wall_s: float
    aggregate_tokens_per_s: float
    guided_steps: int | None = None  # from /metrics, when the server has these series
    rows_per_step: float | None = None
    mask_ms_per_step: float | None = None
    step_ms: float | None = None
    invalid_samples: list[str] = field(default_factory=list)

    @property
    def mask_share(self) -> float | None:
        return self.mask_ms_per_step / self.step_ms if self.mask_ms_per_step is not None and self.step_ms else None


def guided_counters(target: Target) -> dict[str, float] | None:
    """Our engine's guided-decoding counters, summed over models (None: not exposed there)."""
    try:
        text = httpx.get(f"{target.base_url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    totals = dict.fromkeys(GUIDED_SERIES, 0.0)
    seen = False
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
            seen = True
    return totals if seen else None


def validates(text: str, schema: dict[str, Any]) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    try:
        import jsonschema
    except ImportError:  # parse-only where the validator is not installed
        return True
    return jsonschema.Draft202012Validator(schema).is_valid(value)


STRUCTURED_TOPICS = ("painters", "scientists", "poets", "explorers", "chess players", "composers", "inventors",
                     "astronauts", "architects", "novelists", "chefs", "athletes", "philosophers", "pilots",
                     "sculptors", "engineers")
PEOPLE = {"type": "array", "minItems": 8, "maxItems": 8, "items": {
    "type": "object", "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 30},
                                     "born": {"type": "integer", "minimum": 1000, "maximum": 2025}},
    "required": ["name", "born"], "additionalProperties": False}}


def run_structured(target: Target, cfg: BenchConfig) -> StructuredResult:
    """16 streams, each asking for eight people of a topic as a JSON array: answers of about the
    same length, so all 16 rows stay constrained for most of the run (masking at batch 16)."""
    conversations = [user(f"Name eight famous {topic} and the year each was born.") for topic in STRUCTURED_TOPICS]
    schemas = [PEOPLE] * STRUCTURED_STREAMS
    extras = [{"response_format": {"type": "json_schema", "json_schema": {"name": "people", "schema": PEOPLE,
                                                                          "strict": True}}}] * STRUCTURED_STREAMS
    before = guided_counters(target)
    started = time.perf_counter()
    results = asyncio.run(stream_many(target, conversations, STRUCTURED_MAX_TOKENS, cfg.timeout, extras))
    wall = time.perf_counter() - started
    after = guided_counters(target)
    ok = [r for r in results if r.error is None]
    valid = [r for r, schema in zip(results, schemas) if r.error is None and validates(r.text, schema)]
    tokens = sum(r.completion_tokens for r in ok)
    result = StructuredResult(
        system=target.name, streams=len(results), valid=len(valid), errors=len(results) - len(ok),
        completion_tokens=tokens, wall_s=wall, aggregate_tokens_per_s=tokens / wall if wall > 0 else 0.0,
        invalid_samples=[r.text[:120] for r in ok if r not in valid][:3] + _errors(results))
    if before is not None and after is not None:
        delta = {k: after[k] - before[k] for k in GUIDED_SERIES}
        steps = delta["inference_guided_steps_total"]
        if steps > 0:
            result.guided_steps = int(steps)
            result.rows_per_step = delta["inference_guided_rows_total"] / steps
            result.mask_ms_per_step = 1000 * delta["inference_guided_mask_seconds_total"] / steps
            result.step_ms = 1000 * delta["inference_guided_step_seconds_total"] / steps
    return result


def structured_line(r: StructuredResult) -> str:
    line = (f"  {r.system} structured x{r.streams}: {r.valid}/{r.streams} valid, {r.completion_tokens} tokens "
            f"in {r.wall_s:.1f}s = {r.aggregate_tokens_per_s:.1f} tok/s, errors {r.errors}")
    if r.mask_ms_per_step is not None and r.step_ms is not None and r.mask_share is not None:
        line += (f"; masking {r.mask_ms_per_step:.2f} ms per step ({r.rows_per_step:.1f} rows) of "
                 f"{r.step_ms:.1f} ms = {100 * r.mask_share:.1f}%")
    return line


def _meter(target: Target) -> CpuMeter:
    meter = CpuMeter([target.pid, os.getpid()] if target.pid else None)
    meter.start()
    return meter


class WarmupFailed(RuntimeError):
    pass


def warm_up(target: Target, cfg: BenchConfig) -> None:
    """Short requests before measuring (they also load the model if it is not preloaded)."""
    for k in range(cfg.warmup):
        [r] = asyncio.run(stream_many(target, [user(prompt_for(k, cfg.tag("warmup", k)))],
                                      min(cfg.max_tokens, 8), cfg.timeout))
        if r.error:
            raise WarmupFailed(f"warm-up request to {target.base_url} ({target.name}) failed: {r.error}")


def run_target(target: Target, cfg: BenchConfig, scenarios: list[str],
               progress: Callable[[str], None]) -> dict[str, Any]:
    """Every selected scenario against ``target``, in ``RUN_ORDER``; JSON-ready results."""
    warm_up(target, cfg)
    results: dict[str, Any] = {}
    for name in RUN_ORDER:
        if name not in scenarios:
            continue
        started = time.monotonic()
        progress(f"{target.name}: {name} ...")
        if name == "streams":
            results[name] = [asdict(r) for r in run_streams(target, cfg, progress)]
        elif name == "long-prompt":
            results[name] = asdict(run_long_prompt(target, cfg))
        elif name == "interference":
            results[name] = asdict(run_interference(target, cfg))
        elif name == "multi-turn":
            results[name] = asdict(run_multi_turn(target, cfg))
        elif name == "structured":
            structured = run_structured(target, cfg)
            progress(structured_line(structured))
            results[name] = asdict(structured)
        elif name == "rss":
            rss = run_rss(target, cfg)
            results[name] = None if rss is None else asdict(rss)
            if rss is None:
                progress(f"{target.name}: rss skipped (process unknown: give its PID)")
        progress(f"{target.name}: {name} done in {time.monotonic() - started:.1f}s")
    if target.pid is not None:
        results["memory_at_end"] = memory_mb(target.pid)
    return results
