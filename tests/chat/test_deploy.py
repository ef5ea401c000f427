"""Deploying behind a TLS proxy: ``HTTPS=true`` passes Django's deployment checks and turns
on redirects, HSTS and secure cookies; the generated secret key is one file every worker
agrees on."""
from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import threading
from pathlib import Path

from waiproject.settings import read_or_create_secret_key

ROOT = Path(__file__).resolve().parents[2]

# Requests through Django's test client in a process started with HTTPS=true; prints what
# each answered.
_HTTPS_PROBES = """
import json
from django.test import Client
c = Client(headers={"Host": "example.com"})
https = {"X-Forwarded-Proto": "https"}
plain_page = c.get("/accounts/login/")
page = c.get("/accounts/login/", headers=https)
print(json.dumps({
    "plain_page": [plain_page.status_code, plain_page.get("Location")],
    "plain_probes": [c.get(path).status_code for path in ("/healthz", "/metrics")],
    "hsts": page.get("Strict-Transport-Security"),
    "csrf_cookie_secure": bool(page.cookies["csrftoken"]["secure"]),
}))
"""


def _manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SECRET_KEY", "DEBUG")}
    environ.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "VAR_DIR": str(tmp_path / "var"),
                    "DJANGO_SETTINGS_MODULE": "waiproject.settings", **env})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=120)


def _deployed(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _manage(tmp_path, *args, DEBUG="false", HTTPS="true", ALLOWED_HOSTS="example.com",
                   SECRET_KEY=secrets.token_urlsafe(50))


def test_https_true_passes_the_deployment_checks_without_a_warning(tmp_path: Path) -> None:
    result = _deployed(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_https_true_redirects_pages_but_not_probes_and_sends_hsts(tmp_path: Path) -> None:
    result = _deployed(tmp_path, "shell", "-c", _HTTPS_PROBES)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["plain_page"] == [301, "https://example.com/accounts/login/"]
    assert seen["plain_probes"] == [200, 200]  # load balancers and local scrapers speak plain HTTP
    assert seen["hsts"].startswith("max-age=31536000")
    assert seen["csrf_cookie_secure"] is True


def test_the_generated_secret_key_is_private_and_the_same_for_workers_starting_together(tmp_path: Path) -> None:
    path = tmp_path / "var" / "secret_key"
    start = threading.Barrier(8)
    keys: list[str] = []

    def worker() -> None:
        start.wait()
        keys.append(read_or_create_secret_key(path))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["secret_key"]  # no temporary file left behind
    assert read_or_create_secret_key(path) == keys[0]  # and later starts keep it
