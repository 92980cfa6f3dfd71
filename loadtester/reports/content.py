"""What both reports show, as text: the verdict, the key numbers, the latency table, status
codes and errors, thresholds, the traffic a shaped run sent and its per-target table
(htmlreport and pdfreport lay these out; the numbers are formatted here, once, as the dashboard
shows them: µs, thousands separators, times labelled UTC)."""
from __future__ import annotations

from loadtester.analysis.report import LATENCY_COLUMNS
from loadtester.analysis.thresholds import format_value
from loadtester.analysis.verdict import FAILED, NO_THRESHOLDS, PASSED
from loadtester.units import format_bytes, format_ms, format_utc

LATENCY_KEYS = LATENCY_COLUMNS           # (latency_ms key, column name)
# The verdict as the reports name it, and its colour class (red, green, neutral).
RESULT_TITLES = {FAILED: ("Failed", "bad"), PASSED: ("Passed", "good"),
                 NO_THRESHOLDS: ("No thresholds", "neutral")}
NO_RESPONSES = "no responses"
# Rows of a run's targets (weights, journey steps, the per-target table) a report lists, as
# the run page does: a targets file may hold thousands; `loadtester show RUN` lists them all.
TOP_ROWS = 20


def fmt_ms(value) -> str:
    return format_ms(value, sep=" ", micro="\u00b5s")


def fmt_int(value) -> str:
    return "-" if value is None else f"{int(value):,}"


def fmt_bytes(n) -> str:
    return format_bytes(n, sep=" ", digits=2)


def fmt_pct(fraction) -> str:
    return "-" if fraction is None else f"{fraction * 100:.2f}%"


def result_line(data: dict) -> tuple[str, str, str] | None:
    """(title, colour class, reason) of the run's verdict; None while it runs."""
    result = data.get("result")
    if result not in RESULT_TITLES:
        return None
    title, tone = RESULT_TITLES[result]
    return title, tone, str(data.get("result_reason") or "")


def run_times(data: dict) -> str:
    """'started 2025-11-25 01:40:00 UTC · ended ...'."""
    return (f"started {format_utc(data.get('started_at'))} \u00b7 "
            f"ended {format_utc(data.get('completed_at'))}")


def key_numbers(data: dict) -> list[tuple[str, str]]:
    r = data["report"]
    latency = r.get("latency_ms") or {}
    verdict = result_line(data)
    rows = [
        ("Status", str(data.get("status") or r.get("status") or "-")),
        ("Result", verdict[0] if verdict else "-"),
        ("Requests completed", fmt_int(r.get("requests"))),
        ("Attempts", fmt_int(r.get("attempts"))),
        ("Successes", fmt_int(r.get("successes"))),
        ("Errors", fmt_int(r.get("errors"))),
        ("Success rate", fmt_pct(r.get("success_rate"))),
        ("Throughput", f"{r.get('rps') or 0:,.2f} req/s"),
        ("Latency p50", fmt_ms(latency.get("p50"))),
        ("Latency p95", fmt_ms(latency.get("p95"))),
        ("Transfer", f"{fmt_bytes(r.get('bytes_per_s') or 0)}/s"),
        ("Measured duration", f"{r.get('duration_s') or 0:,.2f} s"),
        ("Virtual users", fmt_int(data.get("users") if data.get("users") is not None
                                  else r.get("connections"))),
        ("Load model", f"open loop at {r['rate']:,g} req/s" if r.get("mode") == "rate"
         else "closed loop"),
        ("Method", str(data.get("method") or r.get("method") or "GET")),
    ]
    return rows


def latency_rows(report: dict) -> list[tuple[str, list[str]]]:
    """[(title, [value per LATENCY_KEYS])]: corrected latency, and uncorrected in open loop."""
    out = [("Latency", [fmt_ms((report.get("latency_ms") or {}).get(k)) for k, _ in LATENCY_KEYS])]
    if report.get("uncorrected_latency_ms"):
        out[0] = ("Latency (corrected)", out[0][1])
        out.append(("Uncorrected", [fmt_ms(report["uncorrected_latency_ms"].get(k))
                                    for k, _ in LATENCY_KEYS]))
    return out


def status_rows(report: dict) -> list[tuple[str, str]]:
    """(status code or 'error: kind - its first message', count)."""
    messages = report.get("error_messages") or {}
    rows = [(str(code), fmt_int(count)) for code, count in (report.get("status_codes") or {}).items()]
    rows += [(f"error: {kind}" + (f" - {messages[kind]}" if messages.get(kind) else ""),
              fmt_int(count))
             for kind, count in (report.get("errors_by_kind") or {}).items()]
    return rows


def threshold_rows(report: dict) -> list[tuple[str, str, str]]:
    """(expression, 'pass' or 'FAIL', actual value) of each threshold the run was judged by."""
    return [(str(t.get("expression")), "pass" if t.get("passed") else "FAIL",
             format_value(t.get("actual"), str(t.get("unit") or "ms")))
            for t in report.get("thresholds") or [] if isinstance(t, dict)]


def more_line(hidden: int, report: dict) -> str:
    """What a list cut at TOP_ROWS leaves out, and where the rest is."""
    run = report.get("run_id") if report.get("run_id") is not None else "RUN"
    per_variant = (f"; per variant: loadtester export {run} --variants"
                   if (report.get("traffic") or {}).get("data") else "")
    return f"\u2026 and {hidden:,} more (all of them: loadtester show {run}{per_variant})"


def _capped(rows: list[tuple[str, str]], report: dict) -> list[tuple[str, str]]:
    if len(rows) <= TOP_ROWS:
        return rows
    return rows[:TOP_ROWS] + [("", more_line(len(rows) - TOP_ROWS, report))]


def traffic_rows(report: dict) -> list[tuple[str, str]]:
    """(label, text) of what shaped a run's requests (issue 15), as `show` and the run page
    tell it: the data file (name, rows, sha256, order and seed, one row per connection) and
    how evenly its variants were sent, think time, each target's weight, the journey's steps
    in order (each list cut at TOP_ROWS); [] for a plain run."""
    traffic = report.get("traffic") or {}
    rows: list[tuple[str, str]] = []
    data = traffic.get("data")
    if data:
        rows.append(("Data file", f"{data['file']}, {fmt_int(data['rows'])} rows"))
        rows.append(("Data sha256", str(data["sha256"])))
        order = str(data["order"]) + (f", seed {data['seed']}" if data.get("seed") is not None
                                      else "")
        rows.append(("Data order", order + (", one row per connection"
                                            if data.get("per_connection") else "")))
        served = report.get("variants")
        if served:
            times = (fmt_int(served["min"]) if served["min"] == served["max"]
                     else f"{fmt_int(served['min'])} to {fmt_int(served['max'])}")
            rows.append(("Variants", f"{fmt_int(served['count'])} request variants, each sent "
                                     f"{times} times ({fmt_int(served['unserved'])} never)"))
    think = traffic.get("think_ms")
    if think:
        low, high = think
        rows.append(("Think time", (fmt_ms(low) if low == high
                                    else f"{fmt_ms(low)} to {fmt_ms(high)}, uniform")
                     + " before each request of a connection but its first"))
    targets = report.get("targets") or []
    weights = traffic.get("weights")
    if weights and len(targets) != len(weights):   # (a run rebuilt from its windows: no targets)
        rows.append(("Weights", " / ".join(map(fmt_int, weights))))
    elif weights:
        total = sum(weights)
        rows += _capped([(f"Weight {fmt_int(weight)} ({weight / total * 100:.1f}%)",
                          f"{t['method']} {t['url']}") for weight, t in zip(weights, targets)],
                        report)
    journey = traffic.get("journey")
    if journey:
        steps = ([f"{t['method']} {t['url']}" for t in targets] if len(targets) == len(journey)
                 else list(journey))
        rows += _capped([(f"Step {index}", step) for index, step in enumerate(steps, 1)], report)
    return rows


def target_table(report: dict) -> tuple[str, list[str], list[list[str]], str] | None:
    """(title, head, rows, note) of a run with more than one target (or journey step): each
    one's requests, share of the attempts, errors and p50/p99 when they were measured; past
    TOP_ROWS the TOP_ROWS most sent, and a note saying where the rest is.  None for one
    target."""
    targets = report.get("targets") or []
    if len(targets) < 2:
        return None
    journey = bool((report.get("traffic") or {}).get("journey"))
    weighted = any(t.get("weight") is not None for t in targets)
    measured = any(t.get("latency_ms") for t in targets)
    numbered = list(enumerate(targets, 1))
    if len(numbered) > TOP_ROWS:
        numbered = sorted(numbered, key=lambda it: -it[1]["requests"])[:TOP_ROWS]
    attempts = report.get("attempts") or 0
    rows = []
    for index, t in numbered:
        latency = t.get("latency_ms") or {}
        rows.append([f"{index}. {t['method']} {t['url']}",
                     *([fmt_int(t.get("weight"))] if weighted else []),
                     fmt_int(t["requests"]), fmt_pct(t["requests"] / attempts) if attempts else "-",
                     fmt_int(t["errors"]),
                     *([fmt_ms(latency.get("p50")), fmt_ms(latency.get("p99"))] if measured
                       else [])])
    head = ["Step" if journey else "Target", *(["Weight"] if weighted else []), "Requests",
            "Share", "Errors", *(["p50", "p99"] if measured else [])]
    note = (f"The {TOP_ROWS} most sent of {fmt_int(len(targets))}: "
            f"{more_line(len(targets) - TOP_ROWS, report)}" if len(targets) > TOP_ROWS else "")
    return ("Journey steps" if journey else "Targets"), head, rows, note
