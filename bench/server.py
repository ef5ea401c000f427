"""Our server under test when bench starts it: ``python -m waiproject.serve`` (uvicorn) on a free port with the current
environment and database, and a temporary API token that is deleted afterwards."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

BENCH_USER = "bench"
TOKEN_NAME = "bench (temporary)"


class BenchError(RuntimeError):
    """A run that cannot go on (the management command turns it into ``CommandError``)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """The project's server in a subprocess (current environment and database)."""

    def __init__(self, log_path: Path, cwd: Path, preload: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ)
        env.setdefault("DJANGO_SETTINGS_MODULE", "waiproject.settings")
        env["PYTHONUNBUFFERED"] = "1"
        # the measured model alone is loaded: it gets the main thread (inference.host), and no second
        # engine's OpenMP team makes libgomp throttle the first one's spinning (measured: Gemma 3 270M
        # one stream 83-85 tokens/s alone, 53-58 with the default model loaded beside it)
        self.ready_path = "/readyz"
        if preload:
            env.setdefault("INFERENCE_PRELOAD", preload)
            self.ready_path = f"/readyz?model={preload}"
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "waiproject.serve", "--port", str(self.port)],
            cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float) -> None:
        """Poll ``/readyz`` until 200; raise ``BenchError`` if the server dies or never gets ready."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the server exited with status {self.proc.returncode}:\n{self.log_tail()}")
            try:
                response = httpx.get(f"{self.url}{self.ready_path}", timeout=2)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            time.sleep(0.3)
        raise BenchError(f"the server was not ready within {timeout:.0f}s (last /readyz: {last}):\n{self.log_tail()}")

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


@contextmanager
def temporary_token() -> Iterator[str]:
    """An API token of the ``bench`` user, created in the database and deleted on exit."""
    from django.contrib.auth import get_user_model

    from chat.models import ApiToken

    User = get_user_model()
    user = User.objects.filter(username=BENCH_USER).first() or User.objects.create_user(username=BENCH_USER)
    row, secret = ApiToken.issue(user, TOKEN_NAME, max_concurrent_generations=0)  # 0: no limit (16+ streams)
    try:
        yield secret
    finally:
        row.delete()


@contextmanager
def started_server(log_path: Path, cwd: Path, ready_timeout: float,
                   preload: str | None = None) -> Iterator[ServerProcess]:
    """A ``ServerProcess`` (preloading ``preload``) that answered ``/readyz``; always stopped on exit."""
    server = ServerProcess(log_path, cwd, preload)
    try:
        server.wait_ready(ready_timeout)
        yield server
    finally:
        server.stop()


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within it, SIGTERM raises ``KeyboardInterrupt`` (as Ctrl-C does), so a terminated run
    still stops the server it started and deletes its token."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
