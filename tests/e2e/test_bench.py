"""``manage.py bench`` end to end, tiny: it starts its own server (or uses a running one),
measures, runs the naive baseline, writes JSON and cleans up its token."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from chat.management.commands.bench import parse_levels, percentile
from tests.conftest import ROOT, LiveServer


def test_percentile_interpolates_and_handles_empty() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)


def test_parse_levels() -> None:
    assert parse_levels("1,4,16") == [1, 4, 16]
    with pytest.raises(Exception, match="levels"):
        parse_levels("0,4")


@pytest.mark.model
def test_bench_starts_a_server_and_compares_with_naive(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "VAR_DIR": str(tmp_path / "var"),
        "MODEL_CACHE_DIR": str(ROOT / "var" / "models"),
        "DJANGO_SETTINGS_MODULE": "waiproject.settings",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True)
    out_path = tmp_path / "bench.json"
    run = subprocess.run(
        [*manage, "bench", "--levels", "1,2", "--max-tokens", "4", "--naive-levels", "2", "--warmup", "0",
         "--json", str(out_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "TTFT p95" in run.stdout and "Server / naive" in run.stdout
    report = json.loads(out_path.read_text())
    assert [r["concurrency"] for r in report["server"]] == [1, 2]
    assert [r["concurrency"] for r in report["naive"]] == [2]
    for r in report["server"] + report["naive"]:
        assert r["errors"] == 0 and 0 < r["completion_tokens"] <= 4 * r["concurrency"]
        assert r["ttft_p50_ms"] is not None and r["aggregate_tokens_per_s"] > 0
    assert report["machine"]["cores"] >= 1
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:  # the temporary token is gone
        assert db.execute("select count(*) from chat_apitoken").fetchone()[0] == 0


@pytest.mark.model
def test_bench_against_a_running_server(live_server_proc: LiveServer) -> None:
    run = subprocess.run(
        [sys.executable, "manage.py", "bench", "--url", live_server_proc.url, "--token", live_server_proc.token(),
         "--levels", "2", "--max-tokens", "3", "--no-naive", "--warmup", "0"],
        cwd=ROOT, env=live_server_proc.env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    line = next(li for li in run.stdout.splitlines() if li.startswith("server"))
    assert line.split()[1:4] == ["2", "2", "0"]  # concurrency, requests, errors
