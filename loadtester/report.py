"""Reports: one dict shape (the --json output), rendered as text for people."""
from __future__ import annotations

from loadtester import _engine

PERCENTILES = (50, 75, 90, 99, 99.9)
SUCCESS_RULE = "success = a response with status 1xx-3xx"


def percentile_key(p) -> str:
    return "p" + (f"{p:g}".replace(".", ""))          # 99.9 -> p999


def latency_summary_ms(hist: _engine.Histogram) -> dict:
    if hist.total == 0:
        return {key: None for key in ("min", "avg", "stdev", *map(percentile_key, PERCENTILES), "max")}
    out = {"min": hist.min_us / 1000, "avg": hist.mean_us / 1000, "stdev": hist.stdev_us / 1000}
    for p in PERCENTILES:
        out[percentile_key(p)] = hist.value_at_percentile(p) / 1000
    out["max"] = hist.max_us / 1000
    return out


def summarize(*, spec_config: dict, counters: _engine.Counters, latency: _engine.Histogram,
              service: _engine.Histogram, duration_s: float, stop_reason: str, status: str,
              dropped_records: int = 0, max_loop_lag_us: int = 0, run_id=None, uuid=None,
              db_path=None, started_at=None, targets=None, busy_seconds: int = 0,
              worker_seconds: int = 0) -> dict:
    """The report as data: what `--json` prints and what text is rendered from."""
    completed = counters.responses
    attempts = completed + counters.transport_errors
    rps = completed / duration_s if duration_s > 0 else 0.0
    report = {
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
        "dropped_records": dropped_records,
        "generator": {"max_schedule_lag_ms": counters.max_wait_us / 1000,
                      "max_loop_lag_ms": max_loop_lag_us / 1000,
                      "busy_seconds": busy_seconds, "worker_seconds": worker_seconds,
                      "saturated": _saturated(spec_config, counters, busy_seconds,
                                              worker_seconds)},
    }
    if targets and len(targets) > 1:
        report["targets"] = targets
    if spec_config["mode"] == "rate":
        report["uncorrected_latency_ms"] = latency_summary_ms(service)
    return report


SATURATED_BUSY_SHARE = 0.5        # of worker-seconds at >= 95% CPU
FELL_BEHIND_MS = 10.0              # open loop: sends this late behind the timetable


def _saturated(spec_config, counters, busy_seconds, worker_seconds) -> bool:
    """The generator, not the target, may have set the pace."""
    if worker_seconds and busy_seconds >= SATURATED_BUSY_SHARE * worker_seconds:
        return True
    return spec_config.get("mode") == "rate" and counters.max_wait_us / 1000 > FELL_BEHIND_MS


def format_ms(value, sep: str = "") -> str:
    """Milliseconds for people: 1.23s, 4.56ms, 789us (`sep` goes before the unit)."""
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f}{sep}s"
    if value >= 1:
        return f"{value:.2f}{sep}ms"
    return f"{value * 1000:.0f}{sep}us"


def _bytes(n: float, sep: str = "") -> str:
    """Bytes for people: 512B, 1.50KB, ... (`sep` goes before the unit)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f}{sep}{unit}" if unit != "B" else f"{n:.0f}{sep}B"
        n /= 1024
    return f"{n:.2f}{sep}GB"


# (latency_ms key, column name) of every latency figure, in the order reports show them.
LATENCY_COLUMNS = (("min", "min"), ("avg", "avg"), ("stdev", "stdev"),
                   *((percentile_key(p), f"p{p:g}") for p in PERCENTILES), ("max", "max"))


def _latency_rows(title: str, lat: dict) -> list[str]:
    return [f"  {title:<13}" + "".join(f"{n:>10}" for _, n in LATENCY_COLUMNS),
            f"  {'':<13}" + "".join(f"{format_ms(lat[k]):>10}" for k, _ in LATENCY_COLUMNS)]


def render_text(report: dict) -> str:
    mode = (f"open loop at {report['rate']:g} req/s" if report["mode"] == "rate"
            else "closed loop")
    head = (f"{report['method']} {report['url']}  ({mode}, {report['connections']} connections, "
            f"{report['workers']} worker{'s' if report['workers'] != 1 else ''}"
            + (f", label {report['label']!r}" if report["label"] else "") + ")")
    lines = [head]
    lines.append(f"  {'Requests':<13}{report['requests']:,} completed in {report['duration_s']:.2f}s"
                 f"  ->  {report['rps']:,.1f} req/s, {_bytes(report['bytes_per_s'])}/s"
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
    for target in report.get("targets", []):
        lines.append(f"  {'Target':<13}{target['method']} {target['url']}: "
                     f"{target['requests']:,} requests, {target['errors']:,} errors")
    gen = report["generator"]
    if report["mode"] == "rate" and gen["max_schedule_lag_ms"] > FELL_BEHIND_MS:
        lines.append(f"  {'Generator':<13}fell behind its timetable by up to "
                     f"{format_ms(gen['max_schedule_lag_ms'])} (counted in corrected latency)")
    if gen.get("busy_seconds") and gen["saturated"]:
        lines.append(f"  {'Generator':<13}CPU-bound in {gen['busy_seconds']} of "
                     f"{gen['worker_seconds']} worker-seconds: the generator may have set the "
                     "pace (try --workers)")
    if report.get("thresholds"):
        from loadtester.thresholds import render
        lines.append(render(report["thresholds"]))
    if report["dropped_records"]:
        lines.append(f"  {'Dropped':<13}{report['dropped_records']:,} request rows not stored "
                     "(the store fell behind; totals above are complete)")
    if report.get("run_id") is not None:
        lines.append(f"  {'Stored':<13}run {report['run_id']} ({report['uuid']}) in {report['db']}")
    return "\n".join(lines)


def progress_line(second: int, counters: _engine.Counters, latency: _engine.Histogram,
                  errors_so_far: int) -> str:
    p99 = latency.value_at_percentile(99) / 1000 if latency.total else None
    return (f"[{second + 1:>4}s] {counters.responses:>9,} req/s  p99 {format_ms(p99):>9}  "
            f"errors {errors_so_far:,}")
