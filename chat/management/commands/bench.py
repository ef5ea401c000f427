"""``manage.py bench``: streaming latency and throughput of the real server, against a naive baseline.

For each concurrency level (1, 4, 16 by default) it sends that many streaming requests at once
to ``POST /ai/run/<model>`` over HTTP and measures, from the client's side: time to first
token (TTFT), inter-token latency (ITL, the gaps between consecutive streamed pieces) and the
aggregate throughput (completion tokens of the level / wall time from the first request sent
to the last one finished). By default it starts a real ``daphne`` server on a free port with
the current environment and database; ``--url``/``--token`` target a running one instead.

Then, in the same run and with the server stopped so both do not share the CPU, it measures
the naive baseline: the same model loaded with transformers, one ``model.generate`` per
request in its own thread with a ``TextIteratorStreamer`` (the usual way such servers are
written), the same prompts and greedy decoding, with the same metrics; and prints the ratios.

Both systems run with the current environment's ``INFERENCE_*`` settings (``INFERENCE_NUM_THREADS``
sets torch's threads for both). Each level also reports how much CPU other processes used
meanwhile: on a 2-core machine any of it distorts the numbers badly, so a warning says so.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

BENCH_USER = "bench"
TOKEN_NAME = "bench (temporary)"
# Open-ended prompts that elicit long answers; request i of a level uses topic i.
TOPICS = (
    "a lighthouse keeper who finds a message in a bottle",
    "a robot learning to paint in an abandoned city",
    "two rival bakers in a small mountain village",
    "a young astronomer who discovers a new comet",
    "a cat who becomes the mayor of a seaside town",
    "a librarian guarding a book that rewrites itself",
    "a sailor lost in a storm near an unknown island",
    "a child who can talk to the trees in her garden",
    "an old clockmaker whose clocks predict the weather",
    "a desert caravan searching for a hidden oasis",
    "a musician who hears melodies in the rain",
    "a detective solving a mystery on a night train",
    "a dragon who is afraid of the dark",
    "a farmer who grows a pumpkin the size of a house",
    "a group of friends building a raft to cross a lake",
    "a chef cooking for a king who has lost his sense of taste",
)
ACCEPT_SCALING = 4.0  # aggregate tokens/s at 16 concurrent streams vs one stream
ACCEPT_TTFT_P95_MS = 4000.0  # p95 time to first token at 16 concurrent streams
DISTURBED_CORES = 0.25  # other processes using more CPU than this during a level make it unreliable


def prompt_for(index: int) -> str:
    """The prompt of request ``index`` (distinct topics, each asking for a long answer)."""
    topic = TOPICS[index % len(TOPICS)]
    return f"Write a long, detailed story about {topic}. Describe the characters, the places and every event."


def parse_levels(text: str) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]`` (positive integers)."""
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,4,16") from None
    if not levels or any(n < 1 for n in levels):
        raise argparse.ArgumentTypeError(f"{text!r}: levels must be integers >= 1")
    return levels


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation; None when empty."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class CpuMeter:
    """CPU used by *other* processes during a measurement, from ``/proc`` (Linux; None elsewhere).

    ``own_pids`` are the processes under test (the server, this command); everything else
    that ran meanwhile disturbed the numbers on a machine with few cores.
    """

    def __init__(self, own_pids: Sequence[int] | None) -> None:
        self.own_pids = list(own_pids) if own_pids is not None else None
        self._start: tuple[float, int, int] | None = None

    @staticmethod
    def _busy_jiffies() -> int:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return user + nice + system + irq + softirq + steal

    @staticmethod
    def _pid_jiffies(pid: int) -> int:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (all threads)

    def _own(self) -> int:
        return sum(self._pid_jiffies(pid) for pid in self.own_pids or [])

    def start(self) -> None:
        if self.own_pids is None:
            return
        try:
            self._start = (time.monotonic(), self._busy_jiffies(), self._own())
        except (OSError, ValueError, IndexError):
            self._start = None

    def stop(self) -> float | None:
        """Cores' worth of CPU the other processes used since ``start()``."""
        if self._start is None:
            return None
        try:
            elapsed = time.monotonic() - self._start[0]
            other = (self._busy_jiffies() - self._start[1]) - (self._own() - self._start[2])
        except (OSError, ValueError, IndexError):
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        return max(0.0, other / hz / elapsed) if elapsed > 0 else None


# results ----------------------------------------------------------------------------------
@dataclass
class RequestResult:
    """What the client saw of one request (times in seconds, from ``time.perf_counter``)."""

    index: int
    started: float
    finished: float = 0.0
    piece_times: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.piece_times[0] - self.started if self.piece_times else None

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.piece_times, self.piece_times[1:], strict=False)]


@dataclass
class LevelResult:
    """Metrics of one concurrency level of one system (server or naive)."""

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
    aggregate_tokens_per_s: float
    error_samples: list[str] = field(default_factory=list)
    # cores' worth of CPU used by processes other than the system under test and this command
    # while the level ran (None when unknown, e.g. --url): tells a disturbed measurement
    other_cpu_cores: float | None = None

    @classmethod
    def from_rounds(cls, system: str, concurrency: int, rounds: list[list[RequestResult]]) -> LevelResult:
        """Pool the requests of every round; throughput is total tokens over total wall time."""
        results = [r for rnd in rounds for r in rnd]
        ok = [r for r in results if r.error is None]
        wall = sum(max(r.finished for r in rnd) - min(r.started for r in rnd) for rnd in rounds if rnd)
        ttfts = [t * 1000 for r in ok if (t := r.ttft) is not None]
        gaps = [g * 1000 for r in ok for g in r.gaps]
        tokens = sum(r.completion_tokens for r in ok)
        return cls(
            system=system,
            concurrency=concurrency,
            requests=len(results),
            errors=len(results) - len(ok),
            prompt_tokens=sum(r.prompt_tokens for r in ok),
            completion_tokens=tokens,
            wall_s=wall,
            ttft_p50_ms=percentile(ttfts, 50),
            ttft_p95_ms=percentile(ttfts, 95),
            itl_p50_ms=percentile(gaps, 50),
            itl_p95_ms=percentile(gaps, 95),
            aggregate_tokens_per_s=tokens / wall if wall > 0 else 0.0,
            error_samples=sorted({r.error for r in results if r.error})[:3],
        )


# the server under test ----------------------------------------------------------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``daphne`` serving this project in a subprocess (current environment and database)."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ)
        env.setdefault("DJANGO_SETTINGS_MODULE", "waiproject.settings")
        env["PYTHONUNBUFFERED"] = "1"
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "waiproject.asgi:application"],
            cwd=settings.BASE_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float) -> None:
        """Poll ``/readyz`` until 200; raise ``CommandError`` if the server dies or never gets ready."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CommandError(f"the server exited with status {self.proc.returncode}:\n{self.log_tail()}")
            try:
                response = httpx.get(f"{self.url}/readyz", timeout=2)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            time.sleep(0.3)
        raise CommandError(f"the server was not ready within {timeout:.0f}s (last /readyz: {last}):\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop within 10 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


# the HTTP client ---------------------------------------------------------------------------
async def stream_one(client: httpx.AsyncClient, url: str, token: str, body: dict[str, Any], index: int,
                     timeout: float) -> RequestResult:
    """One streaming request; records the arrival time of every non-empty piece."""
    result = RequestResult(index=index, started=time.perf_counter())

    async def run() -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                result.error = f"HTTP {response.status_code}: {text[:200]}"
                return
            event_name = ""
            done = False
            async for line in response.aiter_lines():
                if not line:
                    event_name = ""
                    continue
                if line.startswith("event:"):
                    event_name = line[6:].strip()
                    continue
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                data = json.loads(payload)
                if event_name == "error":
                    result.error = f"stream error: {data}"
                    return
                if data.get("response"):
                    result.piece_times.append(time.perf_counter())
                usage = data.get("usage")
                if usage:
                    result.completion_tokens = int(usage["completion_tokens"])
                    result.prompt_tokens = int(usage["prompt_tokens"])
            if not done:
                result.error = "stream ended without [DONE]"

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        result.error = f"timed out after {timeout:.0f}s"
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.finished = time.perf_counter()
    return result


async def run_server_level(base_url: str, token: str, model: str, concurrency: int, max_tokens: int,
                           timeout: float) -> list[RequestResult]:
    """``concurrency`` streaming requests sent at once; returns when all have ended."""
    url = f"{base_url}/ai/run/{model}"
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0), limits=limits) as client:
        tasks = [
            stream_one(client, url, token, {
                "prompt": prompt_for(i), "stream": True, "max_tokens": max_tokens, "temperature": 0, "seed": i,
            }, i, timeout)
            for i in range(concurrency)
        ]
        return list(await asyncio.gather(*tasks))


# the naive baseline ---------------------------------------------------------------------------
class NaiveBaseline:
    """The model loaded with transformers; one ``generate`` per request, each in its own thread."""

    def __init__(self, spec: Any) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from inference.config import get_settings, resolve_device
        from inference.loader import _checkpoint_dir

        hf_logging.disable_progress_bar()
        inference_settings = get_settings()
        if inference_settings.num_threads:
            torch.set_num_threads(inference_settings.num_threads)
        self.device = resolve_device(inference_settings.device)
        directory = _checkpoint_dir(spec, inference_settings)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(directory)
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        model: Any = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
        self.model: Any = model.to(self.device).eval()
        self.quantization = "none"
        if spec.precision == "int8" and self.device == "cpu" and hasattr(self.model, "model"):
            from torch import nn
            from torch.ao.quantization import quantize_dynamic

            self.model.model.layers = quantize_dynamic(self.model.model.layers, {nn.Linear}, dtype=torch.qint8)
            self.quantization = "torch-dynamic-int8"
        eos: set[int] = set()
        for value in (self.tokenizer.eos_token_id, getattr(self.model.config, "eos_token_id", None)):
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, list):
                eos.update(value)
        self.eos_token_ids = eos

    def encode(self, prompt: str) -> dict[str, Any]:
        """The prompt under the chat template, as tensors on the model's device."""
        enc = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True,
            return_dict=True, return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def _request(self, inputs: dict[str, Any], max_tokens: int, result: RequestResult) -> None:
        """One request the usual way: ``generate`` in a thread, this thread reads the streamer."""
        from transformers import TextIteratorStreamer

        eos = self.eos_token_ids
        token_times: list[float] = []

        class TimedStreamer(TextIteratorStreamer):
            """Also notes when each generated token arrives (the text pieces come per word)."""

            def put(self, value: Any) -> None:
                if not self.next_tokens_are_prompt:
                    now = time.perf_counter()
                    token_times.extend(now for t in value.reshape(-1).tolist() if t not in eos)
                super().put(value)

        streamer = TimedStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[str] = []

        def generate() -> None:
            try:
                self.model.generate(
                    **inputs, streamer=streamer, do_sample=False, max_new_tokens=max_tokens,
                    eos_token_id=sorted(eos) or None, pad_token_id=self.tokenizer.pad_token_id,
                )
            except Exception as exc:  # noqa: BLE001 - reported in the results
                errors.append(f"{type(exc).__name__}: {exc}")
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        for _piece in streamer:  # what a handler would write to its client
            pass
        worker.join()
        result.finished = time.perf_counter()
        result.piece_times = token_times
        result.completion_tokens = len(token_times)
        result.prompt_tokens = int(inputs["input_ids"].shape[-1])
        result.error = errors[0] if errors else None

    def run_level(self, concurrency: int, max_tokens: int, timeout: float) -> list[RequestResult]:
        """``concurrency`` requests at once, one thread each."""
        inputs = [self.encode(prompt_for(i)) for i in range(concurrency)]
        results: list[RequestResult] = []
        threads: list[threading.Thread] = []
        for i in range(concurrency):
            result = RequestResult(index=i, started=time.perf_counter())
            results.append(result)
            thread = threading.Thread(target=self._request, args=(inputs[i], max_tokens, result), daemon=True)
            threads.append(thread)
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for result in results:
            if not result.finished:
                result.finished = time.perf_counter()
                result.error = f"timed out after {timeout:.0f}s"
        return results


# machine ------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU model, core counts, torch/transformers versions and torch threads (as the server sets them)."""
    import torch
    import transformers

    from inference.config import get_settings

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    num_threads = get_settings().num_threads or torch.get_num_threads()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "torch_threads": num_threads,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


class Command(BaseCommand):
    help = (
        "Benchmark the real server over HTTP at several concurrency levels (TTFT, inter-token latency, "
        "aggregate tokens/s), then the naive one-generate-per-request baseline, and print the ratios."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--levels", type=parse_levels, default=[1, 4, 16],
                            help="concurrent streaming requests per level (default 1,4,16)")
        parser.add_argument("--naive-levels", type=parse_levels, default=None,
                            help="levels for the naive baseline (default: --levels)")
        parser.add_argument("--naive", action=argparse.BooleanOptionalAction, default=True,
                            help="also run the naive transformers baseline (default on)")
        parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every request (default 128)")
        parser.add_argument("--model", default=None, help="catalog name (default: the catalog's default model)")
        parser.add_argument("--rounds", type=int, default=1, help="repeat each level this many times (default 1)")
        parser.add_argument("--warmup", type=int, default=1, help="short warm-up requests before measuring")
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per request (default 300)")
        parser.add_argument("--ready-timeout", type=float, default=300.0,
                            help="seconds to wait for the started server's /readyz (default 300)")
        parser.add_argument("--url", default=None, help="benchmark a running server (e.g. http://127.0.0.1:8000)")
        parser.add_argument("--token", default=None, help="API token for --url")
        parser.add_argument("--server-log", default=None, help="keep the started server's log in this file")
        parser.add_argument("--json", dest="json_path", default=None, help="also write the results to this file")
        parser.add_argument("--check", action="store_true",
                            help="exit with status 1 unless the acceptance criteria hold (needs levels 1 and 16)")

    # orchestration ------------------------------------------------------------------------------------
    def handle(self, *args: Any, **options: Any) -> None:
        levels: list[int] = options["levels"]
        naive_levels: list[int] = options["naive_levels"] or levels
        max_tokens: int = options["max_tokens"]
        rounds: int = options["rounds"]
        timeout: float = options["timeout"]
        if max_tokens < 1 or rounds < 1 or options["warmup"] < 0:
            raise CommandError("--max-tokens and --rounds must be >= 1, --warmup >= 0")
        if bool(options["url"]) != bool(options["token"]):
            raise CommandError("--url and --token go together")

        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
        machine = machine_info()
        server_results: list[LevelResult] = []
        naive_results: list[LevelResult] = []
        if options["url"]:
            base_url = options["url"].rstrip("/")
            model = options["model"] or self._remote_default_model(base_url, options["token"])
            self._banner(machine, model, options, base_url, started=False)
            server_results = self._bench_server(base_url, options["token"], model, levels, max_tokens, rounds,
                                                timeout, options["warmup"])
        else:
            model = options["model"] or self._local_default_model()
            server_results = self._bench_started_server(machine, model, levels, max_tokens, rounds, timeout, options)
        naive_note = None
        if options["naive"]:
            naive_results, naive_note = self._bench_naive(model, naive_levels, max_tokens, rounds, timeout,
                                                          options["warmup"])
        report = self._report(machine, model, options, server_results, naive_results, naive_note)
        if options["json_path"]:
            Path(options["json_path"]).write_text(json.dumps(report, indent=2))
            self.stdout.write(f"\nResults written to {options['json_path']}")
        if options["check"]:
            acceptance = report["acceptance"]
            if acceptance is None or not acceptance["pass"]:
                raise CommandError("acceptance criteria not met" if acceptance else "--check needs levels 1 and 16")

    def _local_default_model(self) -> str:
        from chat.models import CatalogEntry
        from inference.catalog import DEFAULT_MODEL

        entry = CatalogEntry.objects.filter(is_default=True, is_enabled=True).first()
        return entry.name if entry else DEFAULT_MODEL

    def _remote_default_model(self, base_url: str, token: str) -> str:
        try:
            response = httpx.get(f"{base_url}/ai/models/search", headers={"Authorization": f"Bearer {token}"},
                                 timeout=30)
            for item in response.json().get("result") or []:
                if item.get("default"):
                    return str(item["name"])
        except (httpx.HTTPError, ValueError):
            pass
        return self._local_default_model()

    def _banner(self, machine: dict[str, Any], model: str, options: dict[str, Any], url: str, started: bool) -> None:
        where = f"daphne started by bench at {url}" if started else f"running server at {url}"
        self.stdout.write(
            f"Machine: {machine['cpu']} | {machine['cores']} cores ({machine['usable_cores']} usable)"
            f"{' | ' + machine['cuda'] if machine['cuda'] else ''} | torch {machine['torch']} "
            f"({machine['torch_threads']} threads) | transformers {machine['transformers']} | "
            f"Python {machine['python']}"
        )
        self.stdout.write(
            f"Model: {model} | max_tokens {options['max_tokens']} | temperature 0 | rounds {options['rounds']} | "
            f"{where}"
        )
        self.stdout.flush()

    def _bench_started_server(self, machine: dict[str, Any], model: str, levels: list[int], max_tokens: int,
                              rounds: int, timeout: float, options: dict[str, Any]) -> list[LevelResult]:
        """Start daphne, issue a temporary token, measure, and always clean both up."""
        from django.contrib.auth import get_user_model

        from chat.models import ApiToken

        tmpdir = tempfile.TemporaryDirectory(prefix="wai-bench-")
        log_path = Path(options["server_log"]) if options["server_log"] else Path(tmpdir.name) / "server.log"
        token_row = None
        server: ServerProcess | None = None
        try:
            User = get_user_model()
            user = User.objects.filter(username=BENCH_USER).first() or User.objects.create_user(username=BENCH_USER)
            token_row, secret = ApiToken.issue(user, TOKEN_NAME)
            server = ServerProcess(log_path)
            self._banner(machine, model, options, server.url, started=True)
            self.stderr.write(f"waiting for {server.url}/readyz ...")
            started = time.monotonic()
            server.wait_ready(options["ready_timeout"])
            self.stderr.write(f"server ready in {time.monotonic() - started:.1f}s")
            try:
                return self._bench_server(server.url, secret, model, levels, max_tokens, rounds, timeout,
                                          options["warmup"], server_pid=server.proc.pid)
            except BaseException:
                self.stderr.write(f"server log (tail):\n{server.log_tail()}")
                raise
        finally:
            if server is not None:
                server.stop()
            if token_row is not None:
                token_row.delete()
            tmpdir.cleanup()

    def _bench_server(self, base_url: str, token: str, model: str, levels: list[int], max_tokens: int, rounds: int,
                      timeout: float, warmup: int, server_pid: int | None = None) -> list[LevelResult]:
        for _ in range(warmup):  # also loads the model if it is not the preloaded one
            [res] = asyncio.run(run_server_level(base_url, token, model, 1, min(max_tokens, 8), timeout))
            if res.error:
                raise CommandError(f"warm-up request to {base_url} failed: {res.error}")
        out: list[LevelResult] = []
        for level in levels:
            meter = CpuMeter([server_pid, os.getpid()] if server_pid else None)
            meter.start()
            all_rounds = []
            for _ in range(rounds):
                all_rounds.append(asyncio.run(run_server_level(base_url, token, model, level, max_tokens, timeout)))
            result = LevelResult.from_rounds("server", level, all_rounds)
            result.other_cpu_cores = meter.stop()
            self._progress(result)
            out.append(result)
        return out

    def _bench_naive(self, model: str, levels: list[int], max_tokens: int, rounds: int, timeout: float,
                     warmup: int) -> tuple[list[LevelResult], str | None]:
        from chat.models import CatalogEntry
        from inference.catalog import BUILTIN_CATALOG

        entry = CatalogEntry.objects.filter(name=model).first()
        spec = entry.to_spec() if entry else next((s for s in BUILTIN_CATALOG if s.name == model), None)
        if spec is None:
            return [], f"naive baseline skipped: {model} is not in the local catalog"
        self.stderr.write(f"loading {model} with transformers for the naive baseline ...")
        try:
            naive = NaiveBaseline(spec)
        except Exception as exc:  # noqa: BLE001 - the server numbers are still worth printing
            return [], f"naive baseline skipped: loading failed: {type(exc).__name__}: {exc}"
        for _ in range(warmup):
            naive.run_level(1, min(max_tokens, 8), timeout)
        out: list[LevelResult] = []
        for level in levels:
            meter = CpuMeter([os.getpid()])
            meter.start()
            all_rounds = [naive.run_level(level, max_tokens, timeout) for _ in range(rounds)]
            result = LevelResult.from_rounds("naive", level, all_rounds)
            result.other_cpu_cores = meter.stop()
            self._progress(result)
            out.append(result)
        note = None if naive.quantization == "none" else f"naive baseline quantization: {naive.quantization}"
        return out, note

    def _progress(self, r: LevelResult) -> None:
        self.stderr.write(
            f"  {r.system} x{r.concurrency}: {r.completion_tokens} tokens in {r.wall_s:.1f}s "
            f"= {r.aggregate_tokens_per_s:.1f} tok/s, TTFT p95 {_ms(r.ttft_p95_ms)} ms, errors {r.errors}, "
            f"other CPU {_cores(r.other_cpu_cores)} cores"
        )

    # output ----------------------------------------------------------------------------------------------
    def _report(self, machine: dict[str, Any], model: str, options: dict[str, Any], server: list[LevelResult],
                naive: list[LevelResult], naive_note: str | None) -> dict[str, Any]:
        header = (f"{'system':<8}{'conc':>6}{'reqs':>6}{'errors':>8}{'tokens':>8}{'wall s':>9}"
                  f"{'TTFT p50':>10}{'TTFT p95':>10}{'ITL p50':>9}{'ITL p95':>9}{'agg tok/s':>11}{'other CPU':>11}")
        self.stdout.write("")
        self.stdout.write(header + "   (latencies in ms; other CPU: cores used by other processes meanwhile)")
        self.stdout.write("-" * len(header))
        for r in [*server, *naive]:
            self.stdout.write(
                f"{r.system:<8}{r.concurrency:>6}{r.requests:>6}{r.errors:>8}{r.completion_tokens:>8}"
                f"{r.wall_s:>9.1f}{_ms(r.ttft_p50_ms):>10}{_ms(r.ttft_p95_ms):>10}{_ms(r.itl_p50_ms):>9}"
                f"{_ms(r.itl_p95_ms):>9}{r.aggregate_tokens_per_s:>11.1f}{_cores(r.other_cpu_cores):>11}"
            )
        for r in [*server, *naive]:
            for sample in r.error_samples:
                self.stdout.write(f"  {r.system} x{r.concurrency} error: {sample}")
        if naive_note:
            self.stdout.write(naive_note)
        disturbed = [f"{r.system} x{r.concurrency}" for r in [*server, *naive]
                     if r.other_cpu_cores is not None and r.other_cpu_cores > DISTURBED_CORES]
        if disturbed:
            self.stdout.write(
                f"Warning: other processes used more than {DISTURBED_CORES} cores during {', '.join(disturbed)}; "
                "on a machine with few cores their numbers (and the ratios) are not reliable."
            )

        def scaling(results: list[LevelResult]) -> dict[int, float]:
            base = next((r for r in results if r.concurrency == 1), None)
            if base is None or base.aggregate_tokens_per_s <= 0:
                return {}
            return {r.concurrency: r.aggregate_tokens_per_s / base.aggregate_tokens_per_s
                    for r in results if r.concurrency != 1}

        server_scaling, naive_scaling = scaling(server), scaling(naive)
        naive_by_level = {r.concurrency: r for r in naive}
        vs_naive = {
            r.concurrency: r.aggregate_tokens_per_s / naive_by_level[r.concurrency].aggregate_tokens_per_s
            for r in server
            if r.concurrency in naive_by_level and naive_by_level[r.concurrency].aggregate_tokens_per_s > 0
        }
        self.stdout.write("")
        for name, ratios in (("server", server_scaling), ("naive", naive_scaling)):
            if ratios:
                text = ", ".join(f"x{n}: {v:.2f}x" for n, v in ratios.items())
                self.stdout.write(f"Scaling, aggregate tok/s at N / at 1 ({name}): {text}")
        if vs_naive:
            text = ", ".join(f"x{n}: {v:.2f}x" for n, v in vs_naive.items())
            self.stdout.write(f"Server / naive, aggregate tok/s at the same level: {text}")

        acceptance = None
        by_level = {r.concurrency: r for r in server}
        if 1 in by_level and 16 in by_level:
            ratio = server_scaling.get(16, 0.0)
            ttft95 = by_level[16].ttft_p95_ms
            errors = sum(r.errors for r in server)
            scaling_ok = ratio >= ACCEPT_SCALING
            ttft_ok = ttft95 is not None and ttft95 <= ACCEPT_TTFT_P95_MS
            acceptance = {
                "scaling_16_vs_1": ratio, "scaling_ok": scaling_ok,
                "ttft_p95_ms_at_16": ttft95, "ttft_ok": ttft_ok,
                "errors": errors, "pass": scaling_ok and ttft_ok and errors == 0,
            }
            self.stdout.write(
                f"Acceptance: aggregate at 16 / at 1 = {ratio:.2f}x (>= {ACCEPT_SCALING:.0f}x: "
                f"{'PASS' if scaling_ok else 'FAIL'}); TTFT p95 at 16 = {_ms(ttft95)} ms "
                f"(<= {ACCEPT_TTFT_P95_MS:.0f} ms: {'PASS' if ttft_ok else 'FAIL'}); errors {errors}"
            )
        return {
            "machine": machine,
            "config": {
                "model": model, "max_tokens": options["max_tokens"], "temperature": 0, "rounds": options["rounds"],
                "levels": options["levels"], "naive_levels": options["naive_levels"] or options["levels"],
                "url": options["url"] or "started by bench", "timeout_s": options["timeout"],
            },
            "server": [asdict(r) for r in server],
            "naive": [asdict(r) for r in naive],
            "naive_note": naive_note,
            "scaling": {"server": server_scaling, "naive": naive_scaling},
            "server_vs_naive": vs_naive,
            "acceptance": acceptance,
        }
