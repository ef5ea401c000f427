"""From the results (plain JSON-ready dicts) to figures, ratios, acceptance and printed tables.

Everything here is pure: ``analyze`` adds the derived parts to a report, ``render`` turns a
report into lines. The report is what ``--json`` writes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACCEPT_SCALING = 4.0  # aggregate tokens/s at 16 concurrent streams vs one stream
ACCEPT_TTFT_P95_MS = 4000.0  # p95 time to first token at 16 concurrent streams
# The engine issue's goals, judged from one run: (label, figure, "ratio" (ours/peer) or "ours",
# bound, at least (else at most)). None as the figure: computed in ``engine_goals``.
ENGINE_GOALS = (
    ("one stream, tokens/s vs the peer", "streams x1: aggregate", "ratio", 1.0, True),
    ("16 streams, aggregate tokens/s vs the peer", "streams x16: aggregate", "ratio", 2.0, True),
    ("16 streams, TTFT p95 (ms)", "streams x16: TTFT p95", "ours", 1000.0, False),
    ("long prompt, prompt tokens/s vs the peer", "long prompt: prompt processing", "ratio", 2.0, True),
    ("RSS growth after one long request (MB)", "rss: growth", "ours", 300.0, False),
    ("multi-turn, last turn's TTFT / turn 1", None, "ratio", 1.2, False),
    ("streams' ITL p95 during a long prompt / idle", None, "ratio", 3.0, False),
)
DISTURBED_CORES = 0.25  # other processes using more CPU than this during a scenario make it unreliable


@dataclass(frozen=True)
class Figure:
    name: str
    value: float | None
    unit: str  # "tok/s" | "ms" | "MB" | "x" | "tokens"
    better: str  # "higher" | "lower" | "" (informative only)


def fmt(value: float | None, unit: str) -> str:
    """A figure as printed: ``-`` when unknown; precision by unit."""
    if value is None:
        return "-"
    if unit == "ms" and abs(value) < 10:
        return f"{value:.2f}"
    if unit in ("ms", "tokens", "answers"):
        return f"{value:.0f}"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.1f}"


def ratio(ours: float | None, peer: float | None) -> float | None:
    """ours / peer, or None when either is unknown or the peer's is 0."""
    if ours is None or peer is None or peer == 0:
        return None
    return ours / peer


def figures(results: dict[str, Any]) -> list[Figure]:
    """The comparable figures of one server's results, in a fixed order."""
    out: list[Figure] = []
    for level in results.get("streams") or []:
        n = level["concurrency"]
        out += [
            Figure(f"streams x{n}: aggregate", level["aggregate_tokens_per_s"], "tok/s", "higher"),
            Figure(f"streams x{n}: TTFT p50", level["ttft_p50_ms"], "ms", "lower"),
            Figure(f"streams x{n}: TTFT p95", level["ttft_p95_ms"], "ms", "lower"),
            Figure(f"streams x{n}: ITL p50", level["itl_p50_ms"], "ms", "lower"),
            Figure(f"streams x{n}: ITL p95", level["itl_p95_ms"], "ms", "lower"),
            Figure(f"streams x{n}: time per output token", level.get("tpot_ms"), "ms", "lower"),
        ]
    if lp := results.get("long-prompt"):
        out += [
            Figure("long prompt: prompt tokens", lp["prompt_tokens"] or None, "tokens", ""),
            Figure("long prompt: prompt processing", lp["prompt_tokens_per_s"], "tok/s", "higher"),
            Figure("long prompt: TTFT", lp["ttft_ms"], "ms", "lower"),
        ]
    if it := results.get("interference"):
        s = it["streams"]
        out += [
            Figure("interference: long prompt tokens", it["long_prompt_tokens"] or None, "tokens", ""),
            Figure("interference: long prompt processing", it["long_prompt_tokens_per_s"], "tok/s", "higher"),
            Figure(f"interference: {s} streams' ITL p95 idle", it["itl_p95_idle_ms"], "ms", "lower"),
            Figure(f"interference: {s} streams' ITL p95 during", it["itl_p95_during_ms"], "ms", "lower"),
            Figure(f"interference: {s} streams' ITL max during", it["itl_max_during_ms"], "ms", "lower"),
        ]
    if mt := results.get("multi-turn"):
        ttfts = mt["ttft_ms"]
        if ttfts:
            out.append(Figure("multi-turn: TTFT turn 1", ttfts[0], "ms", "lower"))
        if len(ttfts) >= 2:
            out.append(Figure(f"multi-turn: TTFT turn {len(ttfts)}", ttfts[-1], "ms", "lower"))
            out.append(Figure(f"multi-turn: turn {len(ttfts)} / turn 1", mt["last_vs_first"], "x", "lower"))
    if rss := results.get("rss"):
        out += [
            Figure("rss: before one long request", rss["rss_before_mb"], "MB", "lower"),
            Figure("rss: after it", rss["rss_after_mb"], "MB", "lower"),
            Figure("rss: growth", rss["delta_mb"], "MB", "lower"),
        ]
    if st := results.get("structured"):
        n = st["streams"]
        out += [
            Figure(f"structured x{n}: answers valid for their schema", st["valid"], "answers", "higher"),
            Figure(f"structured x{n}: aggregate", st["aggregate_tokens_per_s"], "tok/s", "higher"),
        ]
        if st.get("mask_ms_per_step") is not None:
            out += [
                Figure(f"structured x{n}: masking per step", st["mask_ms_per_step"], "ms", "lower"),
                Figure(f"structured x{n}: whole step", st["step_ms"], "ms", "lower"),
                Figure(f"structured x{n}: masking / step", 100 * st["mask_ms_per_step"] / st["step_ms"]
                       if st["step_ms"] else None, "%", "lower"),
            ]
    if mem := results.get("memory_at_end"):
        out += [
            Figure("rss: at the end", mem["rss_mb"], "MB", "lower"),
            Figure("rss: peak", mem["peak_mb"], "MB", "lower"),
        ]
    return out


def compare(ours: dict[str, Any], peer: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per figure of either server: both values and ours/peer."""
    mine = {f.name: f for f in figures(ours)}
    theirs = {f.name: f for f in figures(peer)} if peer is not None else {}
    names = list(mine) + [n for n in theirs if n not in mine]
    rows = []
    for name in names:
        f = mine.get(name) or theirs[name]
        a = mine[name].value if name in mine else None
        b = theirs[name].value if name in theirs else None
        rows.append({"figure": name, "unit": f.unit, "better": f.better, "ours": a,
                     "peer": b if peer is not None else None, "ratio": ratio(a, b)})
    return rows


def scaling(levels: list[dict[str, Any]]) -> dict[int, float]:
    """Aggregate tok/s at each level / at level 1."""
    base = next((r for r in levels if r["concurrency"] == 1), None)
    if base is None or base["aggregate_tokens_per_s"] <= 0:
        return {}
    return {r["concurrency"]: r["aggregate_tokens_per_s"] / base["aggregate_tokens_per_s"]
            for r in levels if r["concurrency"] != 1}


def acceptance(levels: list[dict[str, Any]]) -> dict[str, Any] | None:
    """16 streams reach 4x one stream's aggregate, TTFT p95 at 16 is at most 4 s, no errors;
    None without levels 1 and 16."""
    by_level = {r["concurrency"]: r for r in levels}
    if 1 not in by_level or 16 not in by_level:
        return None
    value = scaling(levels).get(16, 0.0)
    ttft95 = by_level[16]["ttft_p95_ms"]
    errors = sum(r["errors"] for r in levels)
    scaling_ok = value >= ACCEPT_SCALING
    ttft_ok = ttft95 is not None and ttft95 <= ACCEPT_TTFT_P95_MS
    return {"scaling_16_vs_1": value, "scaling_ok": scaling_ok, "ttft_p95_ms_at_16": ttft95, "ttft_ok": ttft_ok,
            "errors": errors, "pass": scaling_ok and ttft_ok and errors == 0}


def engine_goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The engine issue's goals this run can judge (a ratio needs the peer's figure): for each,
    its label, value, bound and whether it holds."""
    by_name = {r["figure"]: r for r in rows}
    found = {
        "multi-turn, last turn's TTFT / turn 1":
            next((r for r in rows if r["figure"].startswith("multi-turn: turn ") and r["unit"] == "x"), None),
        "streams' ITL p95 during a long prompt / idle": _interference_ratio(rows),
    }
    out = []
    for label, figure, kind, bound, at_least in ENGINE_GOALS:
        row = by_name.get(figure) if figure else found[label]
        value = row.get("ours" if figure is None else kind) if row else None
        if value is None:
            continue
        out.append({"goal": label, "value": value, "bound": bound, "at_least": at_least, "kind": kind,
                    "ok": value >= bound if at_least else value <= bound})
    return out


def _interference_ratio(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A row-shaped ``{"ours": during / idle}`` from the interference figures of ours."""
    idle = next((r["ours"] for r in rows if r["figure"].startswith("interference:")
                 and r["figure"].endswith("ITL p95 idle")), None)
    during = next((r["ours"] for r in rows if r["figure"].startswith("interference:")
                   and r["figure"].endswith("ITL p95 during")), None)
    if not idle or during is None:
        return None
    return {"ours": during / idle}


def analyze(report: dict[str, Any]) -> dict[str, Any]:
    """Add ``comparison``, ``scaling``, ``ours_vs_naive``, ``acceptance`` and ``goals`` to ``report``."""
    targets = report["targets"]
    ours = targets["ours"]["results"] if "ours" in targets else {}
    peer = targets["peer"]["results"] if "peer" in targets else None
    naive = (report.get("naive") or {}).get("levels") or []
    report["comparison"] = compare(ours, peer)
    streams = {name: t["results"].get("streams") or [] for name, t in targets.items()}
    report["scaling"] = {name: scaling(levels) for name, levels in [*streams.items(), ("naive", naive)] if levels}
    naive_by_level = {r["concurrency"]: r for r in naive}
    report["ours_vs_naive"] = {
        r["concurrency"]: r["aggregate_tokens_per_s"] / naive_by_level[r["concurrency"]]["aggregate_tokens_per_s"]
        for r in streams.get("ours", [])
        if r["concurrency"] in naive_by_level and naive_by_level[r["concurrency"]]["aggregate_tokens_per_s"] > 0
    }
    report["acceptance"] = acceptance(streams.get("ours", []))
    report["goals"] = engine_goals(report["comparison"])
    return report


def _disturbed(report: dict[str, Any]) -> list[str]:
    """``<system> <scenario>`` where other processes used more than ``DISTURBED_CORES``."""
    out = []
    sources = [(name, t["results"]) for name, t in report["targets"].items()]
    if report.get("naive"):
        sources.append(("naive", {"streams": report["naive"]["levels"]}))
    for system, results in sources:
        for scenario, value in results.items():
            items = value if isinstance(value, list) else [value]
            for item in items:
                cores = item.get("other_cpu_cores") if isinstance(item, dict) else None
                if cores is not None and cores > DISTURBED_CORES:
                    level = f" x{item['concurrency']}" if "concurrency" in item else ""
                    out.append(f"{system} {scenario}{level}")
    return out


def streams_table(levels: list[dict[str, Any]]) -> list[str]:
    header = (f"{'system':<8}{'conc':>6}{'reqs':>6}{'errors':>8}{'tokens':>8}{'wall s':>9}{'TTFT p50':>10}"
              f"{'TTFT p95':>10}{'ITL p50':>9}{'ITL p95':>9}{'TPOT':>7}{'agg tok/s':>11}{'other CPU':>11}")
    lines = [header + "   (ms; TPOT: time per output token; other CPU: cores used by other processes meanwhile)",
             "-" * len(header)]
    for r in levels:
        cpu = "-" if r["other_cpu_cores"] is None else f"{r['other_cpu_cores']:.2f}"
        lines.append(
            f"{r['system']:<8}{r['concurrency']:>6}{r['requests']:>6}{r['errors']:>8}{r['completion_tokens']:>8}"
            f"{r['wall_s']:>9.1f}{fmt(r['ttft_p50_ms'], 'ms'):>10}{fmt(r['ttft_p95_ms'], 'ms'):>10}"
            f"{fmt(r['itl_p50_ms'], 'ms'):>9}{fmt(r['itl_p95_ms'], 'ms'):>9}{fmt(r.get('tpot_ms'), 'ms'):>7}"
            f"{r['aggregate_tokens_per_s']:>11.1f}{cpu:>11}"
        )
    for r in levels:
        lines += [f"  {r['system']} x{r['concurrency']} error: {sample}" for sample in r["error_samples"]]
    return lines


def comparison_table(rows: list[dict[str, Any]], with_peer: bool) -> list[str]:
    width = max([len(r["figure"]) + len(r["unit"]) + 3 for r in rows] + [30])
    header = f"{'figure':<{width}}{'ours':>10}"
    if with_peer:
        header += f"{'peer':>10}{'ours/peer':>11}  better"
    lines = [header, "-" * len(header)]
    for r in rows:
        unit = "" if r["unit"] in ("x", "tokens", "answers") else f" ({r['unit']})"
        line = f"{r['figure'] + unit:<{width}}{fmt(r['ours'], r['unit']):>10}"
        if with_peer:
            value = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
            line += f"{fmt(r['peer'], r['unit']):>10}{value:>11}  {r['better']}"
        lines.append(line.rstrip())
    return lines


def _other_errors(name: str, results: dict[str, Any]) -> list[str]:
    lines = []
    for scenario in ("long-prompt", "multi-turn", "rss"):
        if (item := results.get(scenario)) and item.get("error"):
            lines.append(f"  {name} {scenario} error: {item['error']}")
    if (it := results.get("interference")) and it["error_samples"]:
        lines += [f"  {name} interference error: {e}" for e in it["error_samples"]]
    return lines


def bandwidth_lines(report: dict[str, Any]) -> list[str]:
    """How close one-stream decode comes to the machine's memory bandwidth: weight bytes a token
    times tokens/s against the probe's GB/s (each server's own rate; the same file)."""
    per_token = report.get("weight_bytes_per_token")
    bandwidth = (report.get("machine") or {}).get("memory_read_gbs")
    if not per_token or not bandwidth:
        return []
    lines = ["", f"Decode reads {per_token / 1e6:.0f} MB of weights a token; this machine reads memory at "
                 f"{bandwidth:.1f} GB/s (probe)"]
    for name, t in report["targets"].items():
        one = next((lv for lv in t["results"].get("streams") or [] if lv["concurrency"] == 1), None)
        if one and one.get("tpot_ms"):
            rate = per_token * 1000 / one["tpot_ms"] / 1e9  # decode alone: time per output token
            lines.append(f"  {name}: one stream decodes at {rate:.1f} GB/s of weights = {100 * rate / bandwidth:.0f}% "
                         "of the measured bandwidth")
    return lines


def render(report: dict[str, Any]) -> list[str]:
    """The printed report: the streams table, the side-by-side figures, ratios and verdicts."""
    targets = report["targets"]
    with_peer = "peer" in targets
    lines: list[str] = []
    levels = [r for t in targets.values() for r in t["results"].get("streams") or []]
    levels += (report.get("naive") or {}).get("levels") or []
    if levels:
        lines += ["", *streams_table(levels)]
    if report["comparison"]:
        lines += ["", *comparison_table(report["comparison"], with_peer)]
    for name, t in targets.items():
        lines += _other_errors(name, t["results"])
        if "rss" in t["results"] and t["results"]["rss"] is None:
            flag = "--peer-pid" if name == "peer" else "--server-pid"
            lines.append(f"  {name} rss: skipped, its process is not known ({flag})")
    if (report.get("naive") or {}).get("note"):
        lines.append(report["naive"]["note"])
    if disturbed := _disturbed(report):
        lines.append(f"Warning: other processes used more than {DISTURBED_CORES} cores during "
                     f"{', '.join(disturbed)}; on a machine with few cores those numbers (and ratios) "
                     "are not reliable.")
    if report["scaling"] or report["ours_vs_naive"]:
        lines.append("")
    for name, values in report["scaling"].items():
        if values:
            text = ", ".join(f"x{n}: {v:.2f}x" for n, v in values.items())
            lines.append(f"Scaling, aggregate tok/s at N / at 1 ({name}): {text}")
    if report["ours_vs_naive"]:
        text = ", ".join(f"x{n}: {v:.2f}x" for n, v in report["ours_vs_naive"].items())
        lines.append(f"Ours / naive, aggregate tok/s at the same level: {text}")
    if acc := report["acceptance"]:
        lines.append(
            f"Batching check: aggregate at 16 / at 1 = {acc['scaling_16_vs_1']:.2f}x (>= {ACCEPT_SCALING:.0f}x: "
            f"{'PASS' if acc['scaling_ok'] else 'FAIL'}); TTFT p95 at 16 = {fmt(acc['ttft_p95_ms_at_16'], 'ms')} ms "
            f"(<= {ACCEPT_TTFT_P95_MS:.0f} ms: {'PASS' if acc['ttft_ok'] else 'FAIL'}); errors {acc['errors']}"
        )
    lines += bandwidth_lines(report)
    if goals := report.get("goals"):
        lines += ["", "Engine issue's goals in this run:"]
        for g in goals:
            value, bound = ((f"{g['value']:.2f}x", f"{g['bound']:.1f}x") if g["kind"] == "ratio"
                            else (f"{g['value']:.0f}", f"{g['bound']:.0f}"))
            lines.append(f"  {g['goal']}: {value} ({'>=' if g['at_least'] else '<='} {bound}: "
                         f"{'PASS' if g['ok'] else 'FAIL'})")
    return lines
