"""Shared fixtures: the real model (loaded once per session) and a live server.

``live_server_proc`` runs ``daphne`` in a subprocess on a free port with its own
SQLite database, exactly as ``make run`` does, for end-to-end and browser tests.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "@cf/huggingfacetb/smollm2-135m-instruct"


@pytest.fixture(scope="session")
def engine():  # type: ignore[no-untyped-def]
    """The real default model's engine, shared by the whole session."""
    from inference import pool
    from inference.catalog import BUILTIN_CATALOG

    spec = next(s for s in BUILTIN_CATALOG if s.name == DEFAULT_MODEL)
    return pool.get(spec)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def manage(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=True
        )
        return out.stdout

    def token(self, username: str = "api-user") -> str:
        if username not in self.tokens:
            self.tokens[username] = self.manage("create_api_token", username, "--create-user").strip().splitlines()[-1]
        return self.tokens[username]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(tmp: Path, extra_env: dict[str, str] | None = None, timeout: float = 180) -> LiveServer:
    port = free_port()
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "VAR_DIR": str(tmp / "var"),
        "MODEL_CACHE_DIR": str(ROOT / "var" / "models"),
        "DJANGO_SETTINGS_MODULE": "waiproject.settings",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("REDIS_URL", None)
    env.update(extra_env or {})
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True)
    log_path = tmp / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "waiproject.asgi:application"],
        cwd=ROOT, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
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


@pytest.fixture(scope="session")
def live_server_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real daphne server with the default settings (as ``make run``)."""
    server = start_server(tmp_path_factory.mktemp("live"))
    yield server
    stop_server(server)
