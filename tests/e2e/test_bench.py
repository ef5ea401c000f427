"""``manage.py bench`` end to end, tiny: it starts its own server, measures every scenario,
measures a peer (here simply another instance of our server) the same way, prints the figures
side by side, writes JSON and cleans up its token; and it measures a running server given by
URL, with the naive baseline. The pure parts are tested in ``tests/bench``."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import MODEL
from tests.support.server import ROOT, LiveServer, migrated_env

pytestmark = [pytest.mark.server, pytest.mark.model]

TINY = ["--levels", "1,2", "--max-tokens", "4", "--long-prompt-tokens", "200", "--turns", "2", "--turn-tokens", "4",
        "--interference-streams", "2", "--warmup", "0"]


def test_bench_starts_a_server_and_compares_with_a_peer(tmp_path: Path, live_server_proc: LiveServer) -> None:
    env = migrated_env(tmp_path)
    out_path = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "manage.py", "bench", *TINY, "--peer", live_server_proc.url, "--peer-token",
         live_server_proc.token(), "--peer-pid", str(live_server_proc.proc.pid), "--json", str(out_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "TTFT p95" in run.stdout and "ours/peer" in run.stdout
    report = json.loads(out_path.read_text())
    assert list(report["targets"]) == ["ours", "peer"]
    assert report["targets"]["peer"]["model"] == MODEL  # the first of its /v1/models: the catalog's default
    for target in report["targets"].values():
        results = target["results"]
        assert [r["concurrency"] for r in results["streams"]] == [1, 2]
        for r in results["streams"]:
            assert r["errors"] == 0 and 0 < r["completion_tokens"] <= 4 * r["concurrency"]
            assert r["ttft_p50_ms"] is not None and r["aggregate_tokens_per_s"] > 0
        long = results["long-prompt"]
        assert long["error"] is None and 150 <= long["prompt_tokens"] <= 300 and long["prompt_tokens_per_s"] > 0
        assert results["interference"]["errors"] == 0 and results["interference"]["long_prompt_tokens"] > 300
        assert results["multi-turn"]["turns"] == 2 and results["multi-turn"]["error"] is None
        assert results["rss"]["error"] is None and results["rss"]["rss_after_mb"] > 0
    rows = {r["figure"]: r for r in report["comparison"]}
    assert rows["streams x2: aggregate"]["ratio"] > 0 and rows["long prompt: prompt processing"]["ratio"] > 0
    line = next(li for li in run.stdout.splitlines() if li.startswith("streams x1: aggregate"))
    assert line.split()[-2].endswith("x") and line.split()[-1] == "higher"  # ours, peer, ours/peer, better
    assert report["machine"]["cores"] >= 1
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:  # the temporary token is gone
        assert db.execute("select count(*) from chat_apitoken").fetchone()[0] == 0


def test_bench_against_a_running_server_with_the_naive_baseline(live_server_proc: LiveServer) -> None:
    run = subprocess.run(
        [sys.executable, "manage.py", "bench", "--url", live_server_proc.url, "--token", live_server_proc.token(),
         "--server-pid", str(live_server_proc.proc.pid), "--scenarios", "streams,rss,naive", "--levels", "2",
         "--max-tokens", "3", "--long-prompt-tokens", "100", "--warmup", "0"],
        cwd=ROOT, env=live_server_proc.env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [li.split() for li in run.stdout.splitlines() if li.startswith(("ours ", "naive "))]
    assert [row[:4] for row in rows] == [["ours", "2", "2", "0"], ["naive", "2", "2", "0"]]  # conc, reqs, errors
    assert "Ours / naive, aggregate tok/s at the same level: x2:" in run.stdout
    assert any(li.startswith("rss: growth (MB)") for li in run.stdout.splitlines())
    assert "ours/peer" not in run.stdout
