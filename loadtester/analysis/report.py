"""Reports: one dict shape (the --json output), rendered as text for people."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from loadtester import _engine
from loadtester.analysis import aggregate
from loadtester.analysis.thresholds import render as render_thresholds
from loadtester.model import ERROR_KINDS, Window, percentile_key
from loadtester.units import format_bytes, format_ms

if TYPE_CHECKING:
    from _typeshed import StrPath

PERCENTILES = (50, 75, 90, 95, 99, 99.9)
SUCCESS_RULE = "success = a response with status 1xx-3xx"


def latency_summary_ms(hist: _engine.Histogram) -> dict[str, float | None]:
    if hist.total == 0:
        return dict.fromkeys(("min", "avg", "stdev", *map(percentile_key, PERCENTILES), "max"))
    out: dict[str, float | None] = {"min": hist.min_us / 1000, "avg": hist.mean_us / 1000,
                                    "stdev": hist.stdev_us / 1000}
    for p in PERCENTILES:
        out[percentile_key(p)] = hist.value_at_percentile(p) / 1000
    out["max"] = hist.max_us / 1000
    return out


def summarize(*, spec_config: dict[str, Any], counters: _engine.Counters, latency: _engine.Histogram,
              service: _engine.Histogram, duration_s: float, stop_reason: str | None, status: str | None,
              dropped_records: int = 0, max_loop_lag_us: int = 0, run_id: int | None = None,
              uuid: str | None = None, db_path: StrPath | None = None, started_at: str | None = None,
              targets: list[dict[str, Any]] | None = None, busy_seconds: int = 0,
              worker_seconds: int = 0, error_messages: dict[str, str] | None = None) -> dict[str, Any]:
    """The report as data: what `--json` prints and what text is rendered from."""
    completed = counters.responses
    attempts = completed + counters.transport_errors
    rps = completed / duration_s if duration_s > 0 else 0.0
    report: dict[str, Any] = {
        "run_id": run_id,
        "uuid": uuid,
        "db": str(db_path) if db_path else None,
        "started_at": started_at,
        "url": spec_config["url"],
        "method": spec_config["method"],
        "label": spec_config.get("label") or "",
        "mode": spec_config["mode"],
        "connections": spec_config["connections"],
        "workers": spec_config["workers"],
        "pipeline": spec_config.get("pipeline") or 1,
        "rate": spec_config.get("rate") or None,
        "duration_s": round(duration_s, 6),
        "status": status,
        "stop_reason": stop_reason,
        "requests": completed,
        "attempts": attempts,
        "successes": counters.successes,
        "errors": counters.error_count,
        "success_rate": (counters.successes / attempts) if attempts else 0.0,
        "success_rule": SUCCESS_RULE,
        "rps": rps,
        "bytes": counters.bytes_read,
        "bytes_per_s": counters.bytes_read / duration_s if duration_s > 0 else 0.0,
        "latency_ms": latency_summary_ms(latency),
        "status_codes": {str(k): v for k, v in sorted(counters.status_counts().items())},
        "errors_by_kind": counters.errors_by_kind(),
        "error_messages": dict(error_messages or {}),     # kind -> its first message
        "dropped_records": dropped_records,
        "generator": {"max_schedule_lag_ms": counters.max_wait_us / 1000,
                      "max_loop_lag_ms": max_loop_lag_us / 1000,
                      "busy_seconds": busy_seconds, "worker_seconds": worker_seconds,
                      "saturated": _saturated(spec_config, counters, busy_seconds,
                                              worker_seconds)},
    }
    traffic = spec_config.get("traffic")
    if traffic:
        report["traffic"] = traffic
    if spec_config.get("resolve"):                     # --resolve pins: where it connected
        report["resolve"] = spec_config["resolve"]
    if targets and (len(targets) > 1 or traffic):
        report["targets"] = targets
    if spec_config["mode"] == "rate":
        report["uncorrected_latency_ms"] = latency_summary_ms(service)
    return report


def traffic_summary(traffic: dict[str, Any] | None) -> str:
    """What shaped the requests, in a few words: 'data users.csv (100,000 rows, sha256
    329926d640e3, random); weights 70/25/5; journey of 3 steps; think 50.00ms'."""
    if not traffic:
        return "fixed requests"
    parts = []
    data = traffic.get("data")
    if data:
        parts.append(f"data {data['file']} ({data['rows']:,} rows, sha256 {data['sha256'][:12]}, "
                     f"{data['order']}{', per connection' if data.get('per_connection') else ''})")
    if traffic.get("weights"):
        parts.append("weights " + "/".join(map(str, traffic["weights"])))
    if traffic.get("journey"):
        parts.append(f"journey of {len(traffic['journey'])} steps")
    if traffic.get("think_ms"):
        low, high = traffic["think_ms"]
        parts.append("think " + (format_ms(low) if low == high
                                 else f"{format_ms(low)}-{format_ms(high)}"))
    return "; ".join(parts)


def _traffic_lines(report: dict[str, Any]) -> list[str]:
    """Targets (or journey steps) with their counts, weights and latency; the data source."""
    traffic = report.get("traffic") or {}
    lines = []
    data = traffic.get("data")
    if data:
        order = data["order"] + (f", seed {data['seed']}" if data.get("seed") is not None else "")
        lines.append(f"  {'Data':<13}{data['file']}: {data['rows']:,} rows (sha256 "
                     f"{data['sha256'][:12]}, {order}"
                     + (", one row per connection" if data.get("per_connection") else "")
                     + f"), {data['variants']:,} request variants in "
                     f"{format_bytes(data['memory_bytes'])}")
        served = report.get("variants")
        if served:
            lines.append(f"  {'':<13}each variant served {served['min']:,} to {served['max']:,} "
                         f"times ({served['unserved']:,} never)")
    if traffic.get("think_ms"):
        low, high = traffic["think_ms"]
        lines.append(f"  {'Think':<13}" + (f"{format_ms(low)}" if low == high
                                            else f"{format_ms(low)} to {format_ms(high)}, uniform")
                     + " before each request of a connection but its first")
    weights = traffic.get("weights")
    total_weight = sum(weights) if weights else 0
    for index, target in enumerate(report.get("targets", [])):
        title = f"Step {index + 1}" if traffic.get("journey") else "Target"
        line = (f"  {title:<13}{target['method']} {target['url']}: "
                f"{target['requests']:,} requests, {target['errors']:,} errors")
        if weights:
            share = target['requests'] / report["attempts"] * 100 if report["attempts"] else 0.0
            line += (f", weight {weights[index]} ({weights[index] / total_weight * 100:.1f}% asked,"
                     f" {share:.2f}% sent)")
        latency = target.get("latency_ms")
        if latency and latency.get("p50") is not None:
            line += (f"; latency p50 {format_ms(latency['p50'])}, p99 {format_ms(latency['p99'])}"
                     f", max {format_ms(latency['max'])}")
        lines.append(line)
    # A worker killed outright never sent its per-target counts (its totals come from its
    # windows): say how much the lines above leave out, rather than let them disagree.
    unattributed = report["attempts"] - sum(t["requests"] for t in report.get("targets", []))
    if report.get("worker_errors") and report.get("targets") and unattributed > 0:
        lines.append(f"  {'':<13}(the counts per {'step' if traffic.get('journey') else 'target'}"
                     f"{' and variant' if data else ''} leave out {unattributed:,} requests of "
                     f"the worker{'s' if len(report['worker_errors']) > 1 else ''} that died)")
    return lines


SATURATED_BUSY_SHARE = 0.5        # of worker-seconds at >= 95% CPU
FELL_BEHIND_MS = 10.0              # open loop: sends this late behind the timetable


def _saturated(spec_config: dict[str, Any], counters: _engine.Counters, busy_seconds: int,
               worker_seconds: int) -> bool:
    """The generator, not the target, may have set the pace."""
    if worker_seconds and busy_seconds >= SATURATED_BUSY_SHARE * worker_seconds:
        return True
    return spec_config.get("mode") == "rate" and counters.max_wait_us / 1000 > FELL_BEHIND_MS


# (latency_ms key, column name) of every latency figure, in the order reports show them.
LATENCY_COLUMNS = (("min", "min"), ("avg", "avg"), ("stdev", "stdev"),
                   *((percentile_key(p), f"p{p:g}") for p in PERCENTILES), ("max", "max"))


def _latency_rows(title: str, lat: dict[str, float | None]) -> list[str]:
    return [f"  {title:<13}" + "".join(f"{n:>10}" for _, n in LATENCY_COLUMNS),
            f"  {'':<13}" + "".join(f"{format_ms(lat[k]):>10}" for k, _ in LATENCY_COLUMNS)]


def render_text(report: dict[str, Any]) -> str:
    steps = len((report.get("traffic") or {}).get("journey") or ())
    unit = f"journeys/s of {steps} steps" if steps else "req/s"
    mode = (f"open loop at {report['rate']:g} {unit}" if report["mode"] == "rate"
            else "closed loop")
    head = (f"{report['method']} {report['url']}  ({mode}, {report['connections']} connections, "
            f"{report['workers']} worker{'s' if report['workers'] != 1 else ''}"
            + (f", pipeline {report['pipeline']}" if report.get("pipeline", 1) > 1 else "")
            + (f", label {report['label']!r}" if report["label"] else "") + ")")
    lines = [head]
    lines.append(f"  {'Requests':<13}{report['requests']:,} completed in {report['duration_s']:.2f}s"
                 f"  ->  {report['rps']:,.1f} req/s, "
                 f"{format_bytes(report['bytes_per_s'], sep='', digits=2)}/s"
                 f"  [{report['stop_reason']}]")
    lines.append(f"  {'Success':<13}{report['success_rate'] * 100:.2f}% of {report['attempts']:,}"
                 f" ({report['success_rule']})")
    if report["mode"] == "rate":
        lines += _latency_rows("Latency", report["latency_ms"])
        lines[-2] += "   (corrected: from intended send time)"
        lines += _latency_rows("Uncorrected", report["uncorrected_latency_ms"])
        lines[-2] += "   (from actual write)"
    else:
        lines += _latency_rows("Latency", report["latency_ms"])
    codes = ", ".join(f"{code}: {count:,}" for code, count in report["status_codes"].items())
    lines.append(f"  {'Status codes':<13}{codes or 'none'}")
    errors = ", ".join(f"{kind} {count:,}" for kind, count in report["errors_by_kind"].items())
    lines.append(f"  {'Errors':<13}{errors or 'none'}")
    for kind, message in (report.get("error_messages") or {}).items():
        lines.append(f"  {'':<13}first {kind}: {message}")
    for death in report.get("worker_errors") or []:
        lines.append(f"  {'Worker died':<13}{death}")
    for entry in report.get("addresses") or []:       # --resolve HOST:PORT:A,B
        shown = f"[{entry['address']}]" if ":" in entry["address"] else entry["address"]
        lines.append(f"  {'Address':<13}{shown}: {entry['connections']:,} connection"
                     f"{'s' if entry['connections'] != 1 else ''}, {entry['requests']:,} requests, "
                     f"{entry['errors']:,} errors")
    lines += _traffic_lines(report)
    gen = report["generator"]
    if report["mode"] == "rate" and gen["max_schedule_lag_ms"] > FELL_BEHIND_MS:
        lines.append(f"  {'Generator':<13}fell behind its timetable by up to "
                     f"{format_ms(gen['max_schedule_lag_ms'])} (counted in corrected latency)")
    if gen.get("busy_seconds") and gen["saturated"]:
        lines.append(f"  {'Generator':<13}CPU-bound in {gen['busy_seconds']} of "
                     f"{gen['worker_seconds']} worker-seconds: the generator may have set the "
                     "pace (try --workers)")
    if report.get("thresholds"):
        lines.append(render_thresholds(report["thresholds"]))
    partial = report.get("partial")
    if partial:
        source = (f"its {partial['windows']:,} stored windows ({partial['seconds']:,} s)"
                  if partial["from"] == "windows" else f"its {partial['request_rows']:,} stored request rows")
        lines.append(f"  {'Partial':<13}the run did not finish: the numbers above are rebuilt from {source}")
    storage = report.get("storage")
    if storage:
        line = (f"  {'Not stored':<13}{storage['rows_not_stored']:,} request rows and "
                f"{storage['windows_not_stored']:,} windows ({storage['error']}); the totals above "
                "are complete")
        lines.append(line)
        if storage.get("spool"):
            lines.append(f"  {'':<13}{storage['rows_in_spool']:,} of those rows wait in {storage['spool']}: "
                         "the next open stores them once there is room")
    elif report["dropped_records"]:
        lines.append(f"  {'Dropped':<13}{report['dropped_records']:,} request rows not stored "
                     "(the store fell behind or failed; totals above are complete)")
    if report.get("run_id") is not None:
        lines.append(f"  {'Stored':<13}run {report['run_id']} ({report['uuid']}) in {report['db']}")
    return "\n".join(lines)


def progress_line(second: int, counters: _engine.Counters, latency: _engine.Histogram,
                  errors_so_far: int) -> str:
    p99 = latency.value_at_percentile(99) / 1000 if latency.total else None
    return (f"[{second + 1:>4}s] {counters.responses:>9,} req/s  p99 {format_ms(p99):>9}  "
            f"errors {errors_so_far:,}")


def report_needs_windows(row: dict[str, Any]) -> bool:
    """Whether report_from_row reads the run's windows: to rebuild a run without a summary,
    or for the generator's lags when the row has no stored `generator` (which wins)."""
    return row.get("latency_hist") is None or not row.get("generator")


def report_from_row(row: dict[str, Any], db_path: StrPath | None,
                    windows: list[Window] | None = None,
                    request_rows: Callable[[], Iterable[tuple[int, int, int, int, int]]] | None = None
                    ) -> dict[str, Any]:
    """The same report `blast` printed, rebuilt from what was stored.

    With the run's `windows` (store.run_windows) the generator's lags come back too,
    and a run that never finished (interrupted: no summary was written) is rebuilt
    from the windows it had committed, or, when it has none, from its request rows
    (`request_rows()`: store.queries.iter_request_codes of the run).  Such a report says
    so under "partial"."""
    config = json.loads(row.get("config") or "{}")
    config.setdefault("url", row.get("url"))
    config.setdefault("method", row.get("method") or "GET")
    config.setdefault("mode", row.get("mode") or "closed")
    config.setdefault("connections", row.get("total_users"))
    config.setdefault("workers", row.get("workers") or 1)
    # A stored `generator` replaces the report's below: the windows' lags only matter without one.
    lags_from_windows = bool(windows) and not row.get("generator")
    loop_lag_us = max((w.get("loop_lag_us") or 0) for w in windows) if lags_from_windows and windows else 0
    partial = None
    if row.get("latency_hist") is None and windows:
        totals = aggregate.total(windows)
        counters, latency, service = totals.counters, totals.latency, totals.service
        duration_s: float = len(totals.seconds)
        partial = {"from": "windows", "windows": len(windows), "seconds": len(totals.seconds)}
    elif row.get("latency_hist") is None and request_rows is not None and (rebuilt := _from_requests(
            request_rows())) is not None:
        counters, latency, service, duration_s, n_rows = rebuilt
        partial = {"from": "request rows", "request_rows": n_rows}
    else:
        max_wait_us = (max((w["counters"]["max_wait_us"] for w in windows), default=0)
                       if lags_from_windows and windows else 0)
        counters = aggregate.counters_from_row(row, max_wait_us=max_wait_us)
        latency = aggregate.hist_from_blob(row.get("latency_hist"))
        service = aggregate.hist_from_blob(row.get("service_hist"))
        duration_s = row.get("measured_duration") or 0.0
    report = summarize(
        spec_config=config, counters=counters, latency=latency, service=service,
        duration_s=duration_s, stop_reason=row.get("stop_reason") or row.get("status"),
        status=row.get("status"), dropped_records=row.get("dropped_records") or 0,
        max_loop_lag_us=loop_lag_us, run_id=row["id"], uuid=row["uuid"], db_path=db_path,
        started_at=row.get("started_at"))
    for key in ("generator", "targets", "variants", "thresholds", "error_messages",
                "worker_errors", "addresses"):
        if row.get(key):
            report[key] = json.loads(row[key])
    if partial is not None:
        report["partial"] = partial
    return report


def _from_requests(rows: Iterable[tuple[int, int, int, int, int]]
                   ) -> tuple[_engine.Counters, _engine.Histogram, _engine.Histogram, float, int] | None:
    """Counters, both histograms, duration and row count of stored request rows
    ((timestamp, latency, wait_us, bytes, code) each); None when there are none."""
    latency, service = _engine.Histogram(), _engine.Histogram()
    errors = [0] * len(ERROR_KINDS)
    status: dict[int, int] = {}
    responses = successes = nbytes = n = 0
    end_us = 0
    for timestamp, latency_us, wait_us, size, code in rows:
        n += 1
        end_us = max(end_us, timestamp + latency_us)
        error = (code >> 16) & 0xFF
        if error:
            errors[min(error, len(errors) - 1)] += 1
            continue
        code &= 0xFFFF
        responses += 1
        successes += 100 <= code < 400
        nbytes += size
        status[code] = status.get(code, 0) + 1
        latency.record_value(latency_us)
        service.record_value(max(0, latency_us - wait_us))
    if not n:
        return None
    counters = _engine.Counters.from_dict({"responses": responses, "successes": successes,
                                           "bytes": nbytes, "errors": errors, "status": status,
                                           "max_wait_us": 0})
    return counters, latency, service, end_us / 1e6, n


def result_columns(report: dict[str, Any], *, latency: _engine.Histogram, service: _engine.Histogram,
                   duration_s: float, stop_reason: str | None, dropped_records: int,
                   target_latency: list[_engine.Histogram] | None = None) -> dict[str, Any]:
    """test_runs columns filled in when a run ends: the report's numbers and the exact
    histograms, the run's and each target's (the inverse of report_from_row)."""
    lat = report["latency_ms"]
    return {
        "total_requests": report["attempts"], "success_count": report["successes"],
        "error_count": report["errors"], "avg_latency": lat["avg"], "min_latency": lat["min"],
        "max_latency": lat["max"], "stdev_latency": lat["stdev"], "p50": lat["p50"],
        "p75": lat["p75"], "p90": lat["p90"], "p99": lat["p99"], "p999": lat["p999"],
        "rps": report["rps"], "bytes": report["bytes"],
        "measured_duration": duration_s, "stop_reason": stop_reason,
        "latency_hist": latency.to_bytes(), "service_hist": service.to_bytes(),
        "status_codes": json.dumps(report["status_codes"]),
        "errors_by_kind": json.dumps(report["errors_by_kind"]),
        "dropped_records": dropped_records,
        "generator": json.dumps(report["generator"]),
        "targets": json.dumps(report["targets"]) if "targets" in report else None,
        "variants": json.dumps(report["variants"]) if "variants" in report else None,
        "thresholds": json.dumps(report["thresholds"]) if "thresholds" in report else None,
        "error_messages": json.dumps(report["error_messages"]) if report.get("error_messages") else None,
        "worker_errors": json.dumps(report["worker_errors"]) if report.get("worker_errors") else None,
        "addresses": json.dumps(report["addresses"]) if report.get("addresses") else None,
        "target_latency": aggregate.pack_histograms(target_latency) if target_latency else None,
    }
