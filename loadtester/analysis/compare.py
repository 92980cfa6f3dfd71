"""Compare two stored runs: headline numbers side by side and a verdict.

The verdict comes from the runs' per-second windows, not from the two headline numbers: each
second of a run gives one p50 latency and one throughput (responses that second).  For each
metric the two samples of seconds are compared with a two-sided Mann-Whitney U test (normal
approximation with tie and continuity correction, pure Python) and the shift counts only when
both hold:
  - p < ALPHA (0.01), and
  - the medians of the per-second values differ by more than MIN_CHANGE (5%),
so a tiny but consistent shift is "no significant change".  Latency up or throughput down is a
regression; latency down or throughput up an improvement.  Failures count too (a target that
fails fast is not faster): the per-second error shares go through the same test, and the shift
counts when the overall error rate also moves by more than 1 percentage point.  A regression
signal wins over an improvement signal.  With runs of 5 seconds or more the first and the last
second are left out (start-up and the partial last second).  When the runs have too few seconds
for the test ever to reach p < 0.01 (fewer than 6 each after trimming: run at least 8 s; or no
windows stored, --store none) and nothing was significant, the verdict is "inconclusive".
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypedDict

from loadtester import store
from loadtester.analysis.aggregate import hist_from_blob, merged_seconds
from loadtester.analysis.mergerows import run_config
from loadtester.analysis.report import report_from_row, traffic_summary
from loadtester.units import format_ms

if TYPE_CHECKING:
    import apsw

ALPHA = 0.01
MIN_CHANGE = 0.05
ERROR_RATE_CHANGE = 0.01   # errors count when the error rate moves by more than 1 percentage point
TRIM_FROM = 5            # runs with at least this many seconds lose their first and last second

VERDICTS = ("regression", "improvement", "no significant change", "inconclusive")
METRICS = ("rps", "p50", "p90", "p95", "p99", "avg", "error_rate")


# --------------------------------------------------------------------------- statistics

class MannWhitney(TypedDict):
    u: float | None
    z: float | None
    p: float


def mann_whitney_u(x: Iterable[float], y: Iterable[float]) -> MannWhitney:
    """Two-sided Mann-Whitney U test of samples x and y.

    Normal approximation with tie correction and continuity correction (as scipy's
    mannwhitneyu(..., method='asymptotic', use_continuity=True)).  Returns
    {"u": U of x, "z": z (positive when x tends to be larger), "p": two-sided p}."""
    x, y = list(x), list(y)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return {"u": None, "z": None, "p": 1.0}
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y], key=lambda item: item[0])
    n = n1 + n2
    rank_sum_x = 0.0
    tie_term = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        average_rank = (i + j + 2) / 2.0                  # ranks are 1-based
        t = j - i + 1
        if t > 1:
            tie_term += t ** 3 - t
        rank_sum_x += average_rank * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        i = j + 1
    u1 = rank_sum_x - n1 * (n1 + 1) / 2.0
    mu = n1 * n2 / 2.0
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:                                     # every value equal
        return {"u": u1, "z": 0.0, "p": 1.0}
    sigma = math.sqrt(variance)
    diff = u1 - mu
    z = max(abs(diff) - 0.5, 0.0) / sigma
    p = min(1.0, math.erfc(z / math.sqrt(2.0)))           # = 2 * (1 - Phi(z))
    return {"u": u1, "z": math.copysign(z, diff), "p": p}


def can_reach_alpha(n1: int, n2: int, alpha: float = ALPHA) -> bool:
    """Whether samples of these sizes, completely separated and without ties, give p < alpha."""
    if n1 == 0 or n2 == 0:
        return False
    return mann_whitney_u(range(n1), range(n1, n1 + n2))["p"] < alpha


def windows_needed(alpha: float = ALPHA) -> int:
    """Per-second windows each run needs (after trimming) for the test to be able to decide."""
    n = 1
    while not can_reach_alpha(n, n, alpha):
        n += 1
    return n


def relative_change(a: float | None, b: float | None) -> float | None:
    """(b - a) / a; None when a is missing or zero."""
    if a is None or b is None or a == 0:
        return None
    return (b - a) / a


# --------------------------------------------------------------------------- per-second samples

def per_second(conn: apsw.Connection, run_id: int) -> list[dict[str, Any]]:
    """[{second, p50_ms, responses, error_share}] from the stored windows, workers added up.
    error_share: failed attempts (transport errors and 4xx/5xx) / attempts in that second."""
    return [{"second": s["second"], "p50_ms": s["p50_ms"], "responses": s["responses"],
             "error_share": (s["errors"] / s["requests"]) if s["requests"] else None}
            for s in merged_seconds(store.run_windows(conn, run_id), detail=True)]


def _trim(seconds: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    if len(seconds) >= TRIM_FROM:
        return seconds[1:-1], True
    return seconds, False


def _signal(metric: str, a: list[float], b: list[float], worse_when_up: bool) -> dict[str, Any]:
    test = mann_whitney_u(a, b)
    median_a = statistics.median(a) if a else None
    median_b = statistics.median(b) if b else None
    change = relative_change(median_a, median_b)
    enough = can_reach_alpha(len(a), len(b))
    if median_a == 0 and median_b:                        # from nothing: any shift is large
        moved = True
    else:
        moved = change is not None and abs(change) > MIN_CHANGE
    significant = bool(test["p"] < ALPHA and moved)
    direction = None
    if significant:
        up = median_b > median_a          # type: ignore[operator]  # (significant: both exist)
        direction = "regression" if up == worse_when_up else "improvement"
    return {"metric": metric, "windows_a": len(a), "windows_b": len(b), "median_a": median_a,
            "median_b": median_b, "change": change, "u": test["u"], "p": test["p"],
            "enough_windows": enough, "significant": significant, "direction": direction}


# --------------------------------------------------------------------------- comparison

def _headline(report: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    lat = report["latency_ms"]
    attempts = report["attempts"]
    return {
        "run_id": row["id"], "uuid": row["uuid"], "label": row.get("label"),
        "started_at": row.get("started_at"), "status": row.get("status"), "url": row.get("url"),
        "mode": report["mode"], "connections": report["connections"],
        "requests": report["requests"], "errors": report["errors"],
        "rps": report["rps"], "p50": lat["p50"], "p90": lat["p90"], "p95": _p95_ms(row, lat),
        "p99": lat["p99"],
        "avg": lat["avg"], "error_rate": (report["errors"] / attempts) if attempts else None,
        "traffic": traffic_summary(report.get("traffic")),
        "body": body_fingerprint(run_config(row)),
    }


def body_fingerprint(config: dict[str, Any]) -> dict[str, Any] | None:
    """{bytes, sha256} of the body a run sent (it keeps no body itself); None for a run
    stored before the sha256 was."""
    if "body_sha256" not in config:
        return None
    return {"bytes": config.get("body_bytes") or 0, "sha256": config["body_sha256"]}


def _p95_ms(row: dict[str, Any], latency_ms: dict[str, Any]) -> float | None:
    """The run's p95 (the report has none): from its stored histogram, when it has one."""
    if latency_ms.get("p95") is not None:
        return float(latency_ms["p95"])
    hist = hist_from_blob(row.get("latency_hist"))
    return hist.value_at_percentile(95) / 1000 if hist.total else None


def _pct(change: float | None) -> str:
    return "n/a" if change is None else f"{change * 100:+.1f}%"


def _change(signal: dict[str, Any]) -> str:
    if signal["median_a"] == 0 and signal["median_b"]:
        return f"0 -> {signal['median_b']:.3g}"
    return _pct(signal["change"])


def compare_runs(conn: apsw.Connection, run_a_row: dict[str, Any],
                 run_b_row: dict[str, Any]) -> dict[str, Any]:
    """Compare run A (the baseline) with run B; rows as store.find_run() returns them."""
    db_path = conn.filename
    report_a = report_from_row(run_a_row, db_path)
    report_b = report_from_row(run_b_row, db_path)
    a, b = _headline(report_a, run_a_row), _headline(report_b, run_b_row)
    change = {m: relative_change(a[m], b[m]) for m in METRICS}
    if a["error_rate"] is not None and b["error_rate"] is not None:
        error_rate_diff = b["error_rate"] - a["error_rate"]
    else:
        error_rate_diff = None

    seconds_a, trimmed_a = _trim(per_second(conn, run_a_row["id"]))
    seconds_b, trimmed_b = _trim(per_second(conn, run_b_row["id"]))
    latency = _signal("p50", [s["p50_ms"] for s in seconds_a if s["p50_ms"] is not None],
                      [s["p50_ms"] for s in seconds_b if s["p50_ms"] is not None], worse_when_up=True)
    throughput = _signal("rps", [s["responses"] for s in seconds_a],
                         [s["responses"] for s in seconds_b], worse_when_up=False)
    # Failures: a target that fails fast is not faster.  The per-second error shares must
    # differ (same test) and the overall error rate move by more than ERROR_RATE_CHANGE.
    errors = _signal("error rate", [s["error_share"] for s in seconds_a if s["error_share"] is not None],
                     [s["error_share"] for s in seconds_b if s["error_share"] is not None],
                     worse_when_up=True)
    if errors["significant"] and (error_rate_diff is None or abs(error_rate_diff) <= ERROR_RATE_CHANGE):
        errors["significant"], errors["direction"] = False, None
    errors["change"] = error_rate_diff                    # percentage points, not relative

    signals = [latency, throughput, errors]
    directions = {s["direction"] for s in signals}
    if "regression" in directions:
        verdict = "regression"
    elif "improvement" in directions:
        verdict = "improvement"
    elif not any(s["enough_windows"] for s in signals):
        verdict = "inconclusive"
    else:
        verdict = "no significant change"

    parts = []
    for s in (latency, throughput):
        if s["windows_a"] == 0 or s["windows_b"] == 0:
            parts.append(f"{s['metric']}: no per-second values in "
                         + ("either run" if s["windows_a"] == s["windows_b"] == 0
                            else ("run A" if s["windows_a"] == 0 else "run B")))
            continue
        parts.append(f"Mann-Whitney p={s['p']:.2g}, median {s['metric']} {_change(s)}")
    if (a["errors"] or b["errors"]) and errors["windows_a"] and errors["windows_b"]:
        parts.append(f"Mann-Whitney p={errors['p']:.2g}, error rate "
                     + ("n/a" if error_rate_diff is None else f"{error_rate_diff * 100:+.2f}pp"))
    explanation = (f"verdict from {len(seconds_a)} vs {len(seconds_b)} per-second windows"
                   + (" (first and last second left out)" if trimmed_a or trimmed_b else "")
                   + ": " + "; ".join(parts)
                   + f" (a shift counts when p < {ALPHA:g} and the median moves more than "
                     f"{MIN_CHANGE:.0%})")
    if verdict == "inconclusive":
        explanation += (f"; inconclusive: too few per-second windows for p < {ALPHA:g} "
                        f"(each run needs {windows_needed()} after trimming: run 8 s or longer, "
                        "with --store windows or requests)")
    notes = []
    if a["mode"] != b["mode"]:
        notes.append(f"the runs use different load models ({a['mode']} vs {b['mode']})")
    if a["url"] != b["url"]:
        notes.append("the runs hit different URLs")
    if a["traffic"] != b["traffic"]:
        notes.append(f"the runs sent different traffic: A {a['traffic']}; B {b['traffic']}")
    if a["body"] and b["body"] and a["body"] != b["body"]:
        notes.append("the runs sent different request bodies (their sha256 differ)")
    if a["mode"] == "rate" and b["mode"] == "rate":
        notes.append("open loop: throughput follows the asked rate, latency is the signal")
    result = {"a": a, "b": b, "change": change, "error_rate_diff": error_rate_diff,
              "tests": {"latency": latency, "rps": throughput, "errors": errors},
              "alpha": ALPHA, "min_change": MIN_CHANGE, "verdict": verdict,
              "explanation": explanation, "notes": notes}
    result["summary"] = plain_summary(result)
    return result


# The headline numbers a plain-language summary speaks of: (key, name, worse when it goes up).
HEADLINES = (("rps", "throughput", False), ("p50", "p50", True), ("p95", "p95", True),
             ("p99", "p99", True))
SUMMARY_TONES = ("improvement", "regression", "mixed", "no notable change", "different targets")


def plain_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The comparison in one line a person reads first: {"text", "tone", "better", "worse"}.

    Each headline number (throughput, p50, p95, p99) that moved by more than MIN_CHANGE, and the
    error rate when it moved by more than ERROR_RATE_CHANGE, is named with its change; the
    tone is "improvement" only when nothing got worse, "regression" only when nothing got
    better, "mixed" when both ("throughput +79%, p99 +57%: mixed").  Runs against different
    URLs get no tone but "different targets": their numbers do not compare.  (The statistical
    verdict stays in result["verdict"].)"""
    a, b, change = result["a"], result["b"], result["change"]
    if a.get("url") != b.get("url"):
        return {"text": "A and B ran against different targets: their numbers do not compare, "
                        "no verdict", "tone": "different targets", "better": [], "worse": []}
    parts: list[str] = []
    better: list[str] = []
    worse: list[str] = []
    for key, name, worse_when_up in HEADLINES:
        moved = change.get(key)
        if moved is None or abs(moved) <= MIN_CHANGE:
            continue
        parts.append(f"{name} {moved * 100:+.0f}%")
        (worse if (moved > 0) == worse_when_up else better).append(name)
    diff = result.get("error_rate_diff")
    if diff is not None and abs(diff) > ERROR_RATE_CHANGE:
        parts.append(f"errors {diff * 100:+.1f} pp")
        (worse if diff > 0 else better).append("errors")
    if better and worse:
        tone = "mixed"
    elif worse:
        tone = "regression"
    elif better:
        tone = "improvement"
    else:
        return {"text": f"no notable change (throughput and latency within {MIN_CHANGE:.0%}, "
                        f"errors within {ERROR_RATE_CHANGE * 100:g} pp)",
                "tone": "no notable change", "better": [], "worse": []}
    return {"text": f"{', '.join(parts)}: {tone}", "tone": tone, "better": better, "worse": worse}


# --------------------------------------------------------------------------- text

def render(result: dict[str, Any]) -> str:
    a, b, change = result["a"], result["b"], result["change"]

    def name(run: dict[str, Any]) -> str:
        return f"run {run['run_id']}" + (f" ({run['label']})" if run.get("label") else "")

    rows = [("rps", f"{a['rps']:,.1f}", f"{b['rps']:,.1f}", _pct(change["rps"]))]
    for m in ("p50", "p90", "p99", "avg"):
        rows.append((m, format_ms(a[m]), format_ms(b[m]), _pct(change[m])))
    er: Callable[[float | None], str] = lambda v: "-" if v is None else f"{v * 100:.2f}%"  # noqa: E731
    diff = result["error_rate_diff"]
    rows.append(("errors", er(a["error_rate"]), er(b["error_rate"]),
                 "n/a" if diff is None else f"{diff * 100:+.2f}pp"))
    wa = max(len(name(a)), 12)
    wb = max(len(name(b)), 12)
    lines = [f"  {'':<13}{'A: ' + name(a):<{wa + 5}}{'B: ' + name(b):<{wb + 5}}change"]
    for label, va, vb, ch in rows:
        lines.append(f"  {label:<13}{va:<{wa + 5}}{vb:<{wb + 5}}{ch}")
    lines.append(f"  {'Verdict':<13}{result['verdict']}")
    lines.append(f"  {'':<13}{result['explanation']}")
    if a["traffic"] == b["traffic"] and a["traffic"] != traffic_summary(None):
        lines.append(f"  {'Traffic':<13}{a['traffic']} (both)")
    for note in result["notes"]:
        lines.append(f"  {'Note':<13}{note}")
    return "\n".join(lines)
