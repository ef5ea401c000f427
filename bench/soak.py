"""The soak behind ``make soak`` (``manage.py soak``): many clients for minutes against a real
server, with hang-ups, reconnects and bad requests mixed in, while the server's memory is sampled.

Each of ``--streams`` workers loops until ``--duration`` is over, one action at a time:

- a native (``/ai/run``) or OpenAI (``/v1/chat/completions``) stream, greedy, 32 to 256 tokens,
  read to its end and checked complete, or hung up on after a few events (the next loop then
  connects again);
- a bad request (NaN temperature, a body over the limit, wrong types, an unknown model) that must
  get a 4xx JSON error;
- a chat turn over the conversation API as a logged-in browser session: post a message, follow its
  stream, sometimes drop it and follow again from the last event id, then check the saved message
  is done and equals what was read.

A lost answer is a stream read to its end that did not end complete, or a chat message that did not
reach ``done``. What each answer must say is in ``soak_report``, which also prints the table.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import soak_report
from .cli import local_default_model
from .client import Target, chat_body, make_client
from .machine import memory_mb
from .prompts import prompt_for
from .server import BenchError, sigterm_interrupts, started_server, temporary_token
from .soak_report import Answer, Sample, Tally

Write = Callable[[str], None]
ACTIONS = ("native", "openai", "chat", "bad")
WEIGHTS = (0.3, 0.3, 0.25, 0.15)
HANG_UP = 0.3  # share of streams (and chat follows) we drop after 1 to 12 events
CHAT_TURNS = 4  # turns per conversation before a worker deletes it and starts another
SOAK_USER = "soak"
# The soak is one token and one user standing for many clients: the per-principal limits
# (generations at once, session requests per minute; 0 = none) are lifted on its server.
UNLIMITED = {"GENERATIONS_PER_PRINCIPAL": "0", "SESSION_RATE_LIMIT_PER_MINUTE": "0"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--streams", type=int, default=64, help="concurrent clients (default 64)")
    a("--duration", type=float, default=300.0,
      help="seconds of load (default 300); what is in flight then runs to its end")
    a("--sample", type=float, default=10.0, help="seconds between rows: server RSS and counts (default 10)")
    a("--warmup", type=float, default=60.0,
      help="RSS is judged from the first sample at or after this many seconds to the last (default 60)")
    a("--max-tokens", type=int, default=256, help="streams ask for 32 to this many tokens, greedy (default 256)")
    a("--seed", type=int, default=0, help="seed of each worker's mix of actions (default 0)")
    a("--model", default=None, help="our catalog name (default: the catalog's default model)")
    a("--timeout", type=float, default=300.0,
      help="seconds a stream may take to its end, and an answer between two bytes (default 300)")
    a("--ready-timeout", type=float, default=300.0, help="seconds to wait for the started server's /readyz")
    a("--server-log", default=None, help="keep the started server's log in this file")
    a("--json", dest="json_path", default=None, help="also write the samples and totals to this file")
    a("--check", action="store_true", help="exit with status 1 when an answer was lost or RSS grew more than 10%%")


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (a server started within inherits them), restored on exit."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def temporary_login() -> Iterator[tuple[str, str]]:
    """The ``soak`` user with a fresh random password; on exit its conversations are deleted and
    its password made unusable."""
    from django.contrib.auth import get_user_model

    from chat.models import Conversation

    User = get_user_model()
    user = User.objects.filter(username=SOAK_USER).first() or User.objects.create_user(username=SOAK_USER)
    password = secrets.token_urlsafe(18)
    user.set_password(password)
    user.save(update_fields=["password"])
    try:
        yield SOAK_USER, password
    finally:
        Conversation.objects.filter(owner=user).delete()
        user.set_unusable_password()
        user.save(update_fields=["password"])


async def log_in(client: httpx.AsyncClient, base_url: str, username: str, password: str) -> str:
    """Log in through the login form as a browser does; returns the CSRF token for API calls."""
    url = f"{base_url}/accounts/login/"
    await client.get(url)
    form = {"username": username, "password": password, "csrfmiddlewaretoken": client.cookies.get("csrftoken", "")}
    response = await client.post(url, data=form)
    if response.status_code != 302 or "sessionid" not in client.cookies:
        raise BenchError(f"could not log in as {username!r}: {response.status_code} {response.text[:200]}")
    return client.cookies.get("csrftoken") or ""  # rotated by the login


@dataclass
class ChatState:
    """A worker's current conversation."""

    conversation: int | None = None
    turns: int = 0


class Soak:
    """The shared state of one run: clients, counts, the deadline."""

    def __init__(self, target: Target, api: httpx.AsyncClient, browser: httpx.AsyncClient, csrf: str,
                 options: dict[str, Any], max_body: int) -> None:
        self.target, self.api, self.browser = target, api, browser
        self.csrf_headers = {"X-CSRFToken": csrf}
        self.options = options
        self.run_id = secrets.token_hex(4)
        self.bad = soak_report.bad_requests(target, max_body)
        self.tally = Tally()
        self.started = time.monotonic()
        self.deadline = self.started + options["duration"]

    def max_tokens(self, rng: random.Random) -> int:
        top = self.options["max_tokens"]
        return rng.randint(min(32, top), top)

    # one worker -----------------------------------------------------------------------------------------
    async def worker(self, index: int) -> None:
        rng = random.Random(f"{self.options['seed']}-{index}")
        chat = ChatState()
        turn = 0
        while time.monotonic() < self.deadline:
            action = rng.choices(ACTIONS, WEIGHTS)[0]
            turn += 1
            try:
                await self.act(action, rng, chat, f"{self.run_id}-{index}-{turn}")
            except httpx.HTTPError as exc:  # timeouts included: httpx's, between bytes
                self.tally.transport_errors += 1
                self.tally.note("transport", f"{action}: {type(exc).__name__}: {exc}")
                chat.conversation = None  # an answer may still stream there: start afresh
                await asyncio.sleep(0.5)
            except (ValueError, KeyError, TypeError) as exc:  # an answer we could not read
                self.tally.wrong += 1
                self.tally.note("contract", f"{action}: {type(exc).__name__}: {exc}")

    async def act(self, action: str, rng: random.Random, chat: ChatState, tag: str) -> None:
        if action == "bad":
            await self.bad_request(rng)
        elif action == "chat":
            await self.chat_turn(rng, chat, tag)
        else:
            await self.stream(action, rng, tag)

    # streams ---------------------------------------------------------------------------------------------
    async def read(self, client: httpx.AsyncClient, method: str, url: str, answer: Answer, hang_after: int | None,
                   **kwargs: Any) -> bool | None:
        """Stream ``url`` into ``answer``. True: we hung up after ``hang_after`` events; False: read
        to its end; None: no stream (its status is counted), or a stream that did not end within
        ``--timeout`` (counted lost: keep-alives can hold one open for ever)."""
        self.tally.active += 1
        opened = False
        try:
            async with asyncio.timeout(self.options["timeout"]), client.stream(method, url, **kwargs) as response:
                if response.status_code != 200:
                    await self.answered(response.status_code, await response.aread(), url)
                    return None
                opened, parser, events = True, soak_report.SseParser(), 0
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    answer.feed(event)
                    events += 1
                    if hang_after is not None and events >= hang_after and not answer.done:
                        return True  # leaving the block closes the connection mid-stream
                return False
        except TimeoutError:
            if not opened:
                raise httpx.ReadTimeout(f"no answer within {self.options['timeout']:.0f}s") from None
            self.tally.lost += 1
            self.tally.note("lost", f"{httpx.URL(url).path}: no end within {self.options['timeout']:.0f}s")
            return None
        finally:
            self.tally.active -= 1

    async def answered(self, status: int, body: bytes, what: str) -> None:
        """Count an answer that is not the one asked for: 429 (back off a second), 5xx, other."""
        if status == 429:
            self.tally.busy += 1
            await asyncio.sleep(1.0)
            return
        if status >= 500:
            self.tally.server_errors += 1
            self.tally.note("5xx", f"{what}: {status} {body[:200]!r}")
        else:
            self.tally.wrong += 1
            self.tally.note("contract", f"{what}: unexpected {status} {body[:200]!r}")

    def judge(self, kind: str, why: str | None) -> None:
        """Count an answer read to its end: complete, or lost (``why``)."""
        if why is None:
            self.tally.completed += 1
            self.tally.by_kind[kind] = self.tally.by_kind.get(kind, 0) + 1
        else:
            self.tally.lost += 1
            self.tally.note("lost", f"{kind}: {why}")

    async def stream(self, kind: str, rng: random.Random, tag: str) -> None:
        t = self.target
        max_tokens = self.max_tokens(rng)
        messages = [{"role": "user", "content": prompt_for(rng.randrange(100), tag)}]
        if kind == "openai":
            url, body = t.completions_url, chat_body(t.model, messages, max_tokens)
        else:
            url = f"{t.base_url}/ai/run/{t.model}"
            body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
        answer = Answer()
        hang_after = rng.randint(1, 12) if rng.random() < HANG_UP else None
        cut = await self.read(self.api, "POST", url, answer, hang_after, json=body, headers=t.headers())
        if cut:
            self.tally.disconnected += 1
        elif cut is False:
            self.judge(kind, soak_report.problem(answer, kind, max_tokens))

    # bad requests ------------------------------------------------------------------------------------------
    async def bad_request(self, rng: random.Random) -> None:
        what, url, body = rng.choice(self.bad)
        started = time.perf_counter()
        headers = {**self.target.headers(), "Content-Type": "application/json"}
        response = await self.api.post(url, content=body, headers=headers)
        if soak_report.is_json_error(response.status_code, response.content):
            self.tally.bad_ok += 1
            self.tally.bad_latency_ms.append((time.perf_counter() - started) * 1000)
        else:
            await self.answered(response.status_code, response.content, f"{what} ({url})")

    # chat -----------------------------------------------------------------------------------------------------
    async def chat_turn(self, rng: random.Random, chat: ChatState, tag: str) -> None:
        base = self.target.base_url
        if chat.conversation is None or chat.turns >= CHAT_TURNS:
            if chat.conversation is not None:
                gone = await self.browser.delete(f"{base}/api/conversations/{chat.conversation}",
                                                 headers=self.csrf_headers)
                if gone.status_code != 200:
                    await self.answered(gone.status_code, gone.content, "delete conversation")
            created = await self.browser.post(f"{base}/api/conversations", json={}, headers=self.csrf_headers)
            if created.status_code != 201:
                await self.answered(created.status_code, created.content, "create conversation")
                return
            chat.conversation, chat.turns = int(created.json()["result"]["id"]), 0
        max_tokens = self.max_tokens(rng)
        posted = await self.browser.post(
            f"{base}/api/conversations/{chat.conversation}/messages", headers=self.csrf_headers,
            json={"content": prompt_for(rng.randrange(100), tag), "max_tokens": max_tokens, "temperature": 0})
        if posted.status_code != 201:
            await self.answered(posted.status_code, posted.content, "post message")
            return
        chat.turns += 1
        result = posted.json()["result"]
        url, message_id = f"{base}{result['stream_url']}", int(result["assistant_message"]["id"])
        answer = Answer()
        hang_after = rng.randint(1, 12) if rng.random() < HANG_UP else None
        cut = await self.read(self.browser, "GET", url, answer, hang_after)
        if cut:  # follow again from the last event id, as a reloaded page does
            self.tally.disconnected += 1
            resume: dict[str, Any] = ({"headers": {"Last-Event-ID": str(answer.offset)}} if rng.random() < 0.5
                                      else {"params": {"offset": answer.offset}})
            cut = await self.read(self.browser, "GET", url, answer, None, **resume)
        if cut is None:  # counted; the answer may still be streaming there: next turn, a new conversation
            chat.conversation = None
            return
        why = soak_report.problem(answer, "chat", max_tokens)
        self.judge("chat", why or await self.saved_mismatch(chat.conversation, message_id, answer))

    async def saved_mismatch(self, conversation: int, message_id: int, answer: Answer) -> str | None:
        """How the saved message differs from what the stream said (None: it does not)."""
        detail = await self.browser.get(f"{self.target.base_url}/api/conversations/{conversation}")
        detail.raise_for_status()
        saved = next(m for m in detail.json()["result"]["messages"] if m["id"] == message_id)
        if saved["state"] != "done":
            return f"saved message in state {saved['state']!r}"
        if saved["content"] != answer.text:
            return f"streamed text ({len(answer.text)} chars) differs from the saved ({len(saved['content'])} chars)"
        return None

    # the run ---------------------------------------------------------------------------------------------------
    async def sample(self, workers: asyncio.Future[Any], pid: int, alive: Callable[[], bool],
                     out: Write) -> list[Sample]:
        """A row every ``--sample`` seconds until every worker is done, and one at the end."""
        samples: list[Sample] = []
        out(soak_report.table_header())
        every = self.options["sample"]
        while True:
            next_at = self.started + every * (len(samples) + 1)
            await asyncio.wait([workers], timeout=max(0.0, next_at - time.monotonic()))
            if not alive():
                raise BenchError("the server exited during the soak")
            now = time.monotonic()
            if now >= self.deadline and (not samples or samples[-1].t < self.options["duration"]):
                out(f"{self.options['duration']:.0f}s of load done; what is in flight runs to its end")
            samples.append(Sample.of(now - self.started, memory_mb(pid)["rss_mb"], self.tally))
            out(soak_report.table_row(samples[-1]))
            if workers.done():
                workers.result()  # a worker's unexpected exception ends the run here
                return samples

    async def held(self) -> int | None:
        """Requests the engine still holds once every client is gone (0 unless one leaked); it is
        given a few seconds, as an abort takes effect at the next decode step."""
        for _ in range(20):
            response = await self.api.get(f"{self.target.base_url}/metrics", headers=self.target.headers())
            if response.status_code != 200:
                return None
            if (count := soak_report.held_requests(response.text)) == 0:
                return 0
            await asyncio.sleep(0.5)
        return count


async def soak(target: Target, login: tuple[str, str], options: dict[str, Any], max_body: int,
               alive: Callable[[], bool], out: Write) -> tuple[list[Sample], Tally, int | None]:
    assert target.pid is not None
    async with make_client(options["streams"], options["timeout"]) as api, \
            make_client(options["streams"], options["timeout"]) as browser:
        csrf = await log_in(browser, target.base_url, *login)
        run = Soak(target, api, browser, csrf, options, max_body)
        workers = asyncio.gather(*(run.worker(i) for i in range(options["streams"])))
        try:
            samples = await run.sample(workers, target.pid, alive, out)
        finally:
            workers.cancel()  # no-op once they are done
            with suppress(asyncio.CancelledError):
                await workers
        return samples, run.tally, await run.held()


def run(options: dict[str, Any], out: Write, err: Write) -> dict[str, Any]:
    """The whole soak; returns the report (also printed, and written with ``--json``). Raises
    ``BenchError`` when it cannot run, or when ``--check`` fails."""
    if min(options["streams"], options["max_tokens"]) < 1 or min(options["duration"], options["sample"],
                                                                  options["timeout"]) <= 0:
        raise BenchError("--streams and --max-tokens must be >= 1, --duration, --sample and --timeout > 0")
    with sigterm_interrupts():
        return _run(options, out, err)


def _run(options: dict[str, Any], out: Write, err: Write) -> dict[str, Any]:
    from django.conf import settings as dj

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    model = options["model"] or local_default_model()
    with tempfile.TemporaryDirectory(prefix="wai-soak-") as tmp, temporary_token() as secret, \
            temporary_login() as login, environment(UNLIMITED):
        log_path = Path(options["server_log"]) if options["server_log"] else Path(tmp) / "server.log"
        err("starting the server and waiting for /readyz ...")
        with started_server(log_path, Path(dj.BASE_DIR), options["ready_timeout"]) as server:
            target = Target("ours", server.url, model, secret, server.pid)
            out(f"Soak: {options['streams']} clients for {options['duration']:.0f}s against {model} at {server.url} "
                f"(pid {server.pid}); a row every {options['sample']:.0f}s")
            try:
                samples, tally, held = asyncio.run(soak(target, login, options, dj.API_MAX_BODY_BYTES,
                                                        lambda: server.proc.poll() is None, out))
            except Exception:
                err(f"server log (tail):\n{server.log_tail()}")
                raise
    verdict = soak_report.rss_verdict(samples, options["warmup"])
    for line in soak_report.verdict_lines(verdict, tally, options["warmup"], held):
        out(line)
    config = {k: options[k] for k in ("streams", "duration", "sample", "warmup", "seed", "timeout", "max_tokens")}
    report = soak_report.report(config | {"model": model}, samples, tally, verdict, held)
    if options["json_path"]:
        Path(options["json_path"]).write_text(json.dumps(report, indent=2))
        out(f"\nResults written to {options['json_path']}")
    if options["check"] and (tally.lost or verdict.flat is False):
        raise BenchError(f"soak failed: {tally.lost} lost answers, RSS {'grew' if verdict.flat is False else 'flat'}")
    return report
