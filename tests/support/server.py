"""Real servers for end-to-end and browser tests: ``python -m waiproject.serve`` (uvicorn) in a
subprocess on a free port with its own SQLite database, exactly as ``make run`` serves it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LiveServer:
    url: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def manage(self, *args: str) -> str:
        """Run ``manage.py`` against this server's database; its stdout."""
        out = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=True
        )
        return out.stdout

    def token(self, username: str = "api-user") -> str:
        """An API token of ``username`` (created with the user on first use)."""
        if username not in self.tokens:
            self.tokens[username] = self.manage("create_api_token", username, "--create-user").strip().splitlines()[-1]
        return self.tokens[username]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def migrated_env(tmp: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a server (or ``manage.py``) whose database and files live under
    ``tmp``, sharing the model cache and without Redis unless ``extra_env`` says so;
    its database is migrated."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update({
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "VAR_DIR": str(tmp / "var"),
        "MODEL_CACHE_DIR": str(ROOT / "var" / "models"),
        "DJANGO_SETTINGS_MODULE": "waiproject.settings",
        "PYTHONUNBUFFERED": "1",
        # one token drives many concurrent streams in these tests; the limits have their own
        "GENERATIONS_PER_PRINCIPAL": "0",
        "SESSION_RATE_LIMIT_PER_MINUTE": "0",
        **(extra_env or {}),
    })
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True)
    return env


def start_server(tmp: Path, extra_env: dict[str, str] | None = None, timeout: float = 180,
                 port: int | None = None, log_name: str = "server.log") -> LiveServer:
    """Start a server and wait until ``/readyz`` says its default model is loaded."""
    env = migrated_env(tmp, extra_env)
    port = port or free_port()
    log_path = tmp / log_name
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "waiproject.serve", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", env, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server not ready in {timeout}s:\n{server.log()}")


def stop_server(server: LiveServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()


@contextmanager
def running_server(tmp: Path, extra_env: dict[str, str] | None = None) -> Iterator[LiveServer]:
    """A server for the ``with`` block; stopped however the block ends."""
    server = start_server(tmp, extra_env)
    try:
        yield server
    finally:
        stop_server(server)
