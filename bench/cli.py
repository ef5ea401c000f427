"""The command line (``manage.py bench`` / ``make bench``): options, the order of the run, output.

Our server is measured first (started by bench unless ``--url`` names a running one), then,
with ours stopped, the peer (``--peer``), then, when asked for, the naive baseline in this
process: never two at the same time, since they would share the CPU.
"""
from __future__ import annotations

import argparse
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from .client import Target, first_model, normalize_base_url
from .machine import machine_info, memory_read_gbs, weight_bytes_per_token
from .report import analyze, render
from .scenarios import OPTIONAL_SCENARIOS, SCENARIOS, BenchConfig, WarmupFailed, run_target
from .server import BenchError, sigterm_interrupts, started_server, temporary_token

Write = Callable[[str], None]


def parse_levels(text: str) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]`` (positive integers)."""
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,4,16") from None
    if not levels or any(n < 1 for n in levels):
        raise argparse.ArgumentTypeError(f"{text!r}: levels must be integers >= 1")
    return levels


def parse_scenarios(text: str) -> list[str]:
    """``"streams,rss"`` -> ``["streams", "rss"]``; ``all`` is the default set."""
    known = (*SCENARIOS, *OPTIONAL_SCENARIOS)
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        for name in SCENARIOS if part == "all" else (part,):
            if name not in known:
                raise argparse.ArgumentTypeError(f"unknown scenario {name!r}; known: {', '.join(known)}, all")
            if name not in names:
                names.append(name)
    if not names:
        raise argparse.ArgumentTypeError("no scenario given")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--scenarios", type=parse_scenarios, default=list(SCENARIOS),
      help=f"comma-separated, from {', '.join((*SCENARIOS, *OPTIONAL_SCENARIOS))} (default: all = "
           f"{','.join(SCENARIOS)}; naive, the transformers baseline, only when named)")
    a("--naive", action="store_true", help="also run the naive transformers baseline (= adding naive to --scenarios)")
    a("--levels", type=parse_levels, default=[1, 16], help="streams: concurrent requests per level (default 1,16)")
    a("--naive-levels", type=parse_levels, default=None, help="levels of the naive baseline (default: --levels)")
    a("--max-tokens", type=int, default=128, help="max_tokens of the streams and interference requests (default 128)")
    a("--long-prompt-tokens", type=int, default=2000,
      help="long-prompt: prompt size in tokens, about; interference and rss send twice as many (default 2000)")
    a("--interference-streams", type=int, default=4, help="interference: streams decoding meanwhile (default 4)")
    a("--turns", type=int, default=5, help="multi-turn: turns of the conversation (default 5)")
    a("--turn-tokens", type=int, default=64, help="multi-turn: max_tokens of each turn (default 64)")
    a("--model", default=None, help="our catalog name (default: the catalog's default model)")
    a("--rounds", type=int, default=1, help="streams: repeat each level this many times (default 1)")
    a("--warmup", type=int, default=1, help="short warm-up requests to each server before measuring (default 1)")
    a("--timeout", type=float, default=300.0, help="seconds allowed per request (default 300)")
    a("--ready-timeout", type=float, default=300.0, help="seconds to wait for the started server's /readyz")
    a("--url", default=None, help="measure our server running there (e.g. http://127.0.0.1:8000) instead of "
                                  "starting one")
    a("--token", default=None, help="API token for --url")
    a("--server-pid", type=int, default=None, help="PID of the --url server (for rss and the CPU meter)")
    a("--server-log", default=None, help="keep the started server's log in this file")
    a("--peer", default=None, help="also measure this OpenAI-compatible server (e.g. llama-server at "
                                   "http://127.0.0.1:8080), after ours, and print ratios")
    a("--peer-model", default=None, help="the peer's model id (default: the first of its GET /v1/models)")
    a("--peer-token", default=None, help="API key for the peer, if it needs one")
    a("--peer-pid", type=int, default=None, help="PID of the peer (for rss and the CPU meter)")
    a("--fixed-length", action="store_true", help="every answer runs to its max_tokens (min_tokens for ours, "
                                                   "ignore_eos for llama-server): for models with random weights")
    a("--json", dest="json_path", default=None, help="also write all results to this file")
    a("--check", action="store_true", help="exit with status 1 unless 16 streams reach 4x one stream's aggregate "
                                           "tok/s with TTFT p95 <= 4 s (needs streams levels 1 and 16)")


def validate(options: dict[str, Any]) -> None:
    positive = ("max_tokens", "rounds", "turns", "turn_tokens", "interference_streams")
    if any(options[name] < 1 for name in positive) or options["warmup"] < 0:
        raise BenchError("--max-tokens, --rounds, --turns, --turn-tokens and --interference-streams must be >= 1, "
                         "--warmup >= 0")
    if options["long_prompt_tokens"] < 50:
        raise BenchError("--long-prompt-tokens must be >= 50")
    if bool(options["url"]) != bool(options["token"]):
        raise BenchError("--url and --token go together")
    if options["server_pid"] and not options["url"]:
        raise BenchError("--server-pid is for a server given by --url (bench knows the one it starts)")
    if not options["peer"] and any(options[k] for k in ("peer_model", "peer_token", "peer_pid")):
        raise BenchError("--peer-model, --peer-token and --peer-pid need --peer")


def inference_settings() -> Any:
    """The ``InferenceSettings`` our server is built with (the Django project's)."""
    from django.conf import settings as dj

    return dj.INFERENCE


def local_default_model() -> str:
    from chat.models import CatalogEntry
    from inference import DEFAULT_MODEL

    entry = CatalogEntry.objects.filter(is_default=True, is_enabled=True).first()
    return entry.name if entry else DEFAULT_MODEL


def remote_default_model(base_url: str, token: str) -> str:
    try:
        response = httpx.get(f"{base_url}/ai/models/search", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        for item in response.json().get("result") or []:
            if item.get("default"):
                return str(item["name"])
    except (httpx.HTTPError, ValueError):
        pass
    return local_default_model()


def local_spec(model: str) -> Any:
    from chat.models import CatalogEntry
    from inference import BUILTIN_CATALOG

    entry = CatalogEntry.objects.filter(name=model).first()
    return entry.to_spec() if entry else next((s for s in BUILTIN_CATALOG if s.name == model), None)


def _model_bytes(model: str | None) -> int | None:
    """Bytes of weights one decode token reads, where ``model`` is a local GGUF entry."""
    if model is None:
        return None
    spec = local_spec(model)
    if spec is None or spec.is_remote:
        return None
    from inference import gguf_path

    try:
        path = gguf_path(spec, inference_settings().model_cache_dir)
    except (FileNotFoundError, ImportError, ValueError):
        return None
    return weight_bytes_per_token(path) if path is not None else None


def banner(machine: dict[str, Any], cfg: BenchConfig, scenarios: list[str]) -> str:
    return (
        f"Machine: {machine['cpu']} | {machine['cores']} cores ({machine['usable_cores']} usable)"
        f" | flags {machine.get('isa', '?')} | memory read {machine.get('memory_read_gbs', 0):.1f} GB/s"
        f"{' | ' + machine['cuda'] if machine['cuda'] else ''} | torch {machine['torch']} "
        f"({machine['torch_threads']} threads) | transformers {machine['transformers']} | Python {machine['python']}\n"
        f"Run {cfg.run_id}: {','.join(scenarios)} | max_tokens {cfg.max_tokens} | temperature 0 | "
        f"levels {','.join(map(str, cfg.levels))} | long prompt ~{cfg.long_prompt_tokens} tokens | "
        f"{cfg.turns} turns | rounds {cfg.rounds}"
    )


def describe(target: Target, where: str) -> str:
    pid = f"pid {target.pid}" if target.pid else "pid unknown"
    return f"{target.name}: {target.model} at {target.base_url} ({where}, {pid})"


def run(options: dict[str, Any], out: Write, err: Write) -> dict[str, Any]:
    """The whole run; returns the report (also printed, and written with ``--json``). Raises
    ``BenchError`` when it cannot run, or when ``--check`` fails."""
    validate(options)
    with sigterm_interrupts():
        return _run(options, out, err)


def _run(options: dict[str, Any], out: Write, err: Write) -> dict[str, Any]:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    scenarios: list[str] = list(options["scenarios"]) + (["naive"] if options["naive"] else [])
    server_scenarios = [s for s in scenarios if s != "naive"]
    settings = inference_settings()
    machine = machine_info(settings.num_threads)
    cfg = BenchConfig(
        run_id=secrets.token_hex(4), levels=options["levels"], max_tokens=options["max_tokens"],
        rounds=options["rounds"], warmup=options["warmup"], timeout=options["timeout"],
        long_prompt_tokens=options["long_prompt_tokens"], interference_streams=options["interference_streams"],
        turns=options["turns"], turn_tokens=options["turn_tokens"],
    )
    peer: Target | None = None
    if options["peer"] and server_scenarios:  # resolved first: a wrong --peer fails before any work
        base = normalize_base_url(options["peer"])
        try:
            peer_model = options["peer_model"] or first_model(base, options["peer_token"])
        except (httpx.HTTPError, ValueError) as exc:
            raise BenchError(f"--peer {base}: cannot list its models ({type(exc).__name__}: {exc}); "
                             "give --peer-model") from None
        peer = Target("peer", base, peer_model, options["peer_token"], options["peer_pid"],
                      options["fixed_length"])
    machine["memory_read_gbs"] = memory_read_gbs()
    out(banner(machine, cfg, scenarios))
    targets: dict[str, dict[str, Any]] = {}
    model: str | None = options["model"]
    model_bytes = _model_bytes(model or (local_default_model() if not options["url"] else None))

    def measure(target: Target, where: str) -> None:
        out(describe(target, where))
        try:
            results = run_target(target, cfg, server_scenarios, err)
        except WarmupFailed as exc:
            raise BenchError(str(exc)) from None
        targets[target.name] = {"url": target.base_url, "model": target.model, "pid": target.pid,
                                "where": where, "results": results}

    if server_scenarios and options["url"]:
        base = normalize_base_url(options["url"])
        model = model or remote_default_model(base, options["token"])
        measure(Target("ours", base, model, options["token"], options["server_pid"], options["fixed_length"]),
                "running server")
    elif server_scenarios:
        model = model or local_default_model()
        from django.conf import settings as dj

        with tempfile.TemporaryDirectory(prefix="wai-bench-") as tmp, temporary_token() as secret:
            log_path = Path(options["server_log"]) if options["server_log"] else Path(tmp) / "server.log"
            err("starting the server and waiting for /readyz ...")
            started = time.monotonic()
            with started_server(log_path, Path(dj.BASE_DIR), options["ready_timeout"], model) as server:
                err(f"server ready in {time.monotonic() - started:.1f}s")
                try:
                    measure(Target("ours", server.url, model, secret, server.pid, options["fixed_length"]),
                            "server started by bench")
                except Exception:
                    err(f"server log (tail):\n{server.log_tail()}")
                    raise
    if peer is not None:
        measure(peer, "peer")
    naive: dict[str, Any] | None = None
    if "naive" in scenarios:
        from .naive import run_naive

        model = model or local_default_model()
        spec = local_spec(model)
        if spec is None:
            naive = {"levels": [], "note": f"naive baseline skipped: {model} is not in the local catalog"}
        else:
            levels, note = run_naive(spec, settings, cfg, options["naive_levels"] or cfg.levels, err)
            naive = {"levels": [asdict(r) for r in levels], "note": note}
    report: dict[str, Any] = {
        "machine": machine,
        "config": {"run_id": cfg.run_id, "scenarios": scenarios, "model": model, "max_tokens": cfg.max_tokens,
                   "temperature": 0, "levels": cfg.levels, "naive_levels": options["naive_levels"] or cfg.levels,
                   "rounds": cfg.rounds, "warmup": cfg.warmup, "long_prompt_tokens": cfg.long_prompt_tokens,
                   "interference_streams": cfg.interference_streams, "turns": cfg.turns,
                   "turn_tokens": cfg.turn_tokens, "timeout_s": cfg.timeout,
                   "url": options["url"] or "started by bench", "peer": options["peer"]},
        "targets": targets,
        "naive": naive,
        "weight_bytes_per_token": model_bytes,
    }
    analyze(report)
    for line in render(report):
        out(line)
    if options["json_path"]:
        Path(options["json_path"]).write_text(json.dumps(report, indent=2))
        out(f"\nResults written to {options['json_path']}")
    if options["check"]:
        acceptance = report["acceptance"]
        if acceptance is None or not acceptance["pass"]:
            raise BenchError("acceptance criteria not met" if acceptance else "--check needs streams levels 1 and 16")
    return report
