"""attack -> results -> report: one blast, stored as it runs."""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import signal
import sys
from collections.abc import Sequence

from loadtester import __version__, _engine, store
from loadtester.analysis import report as report_mod
from loadtester.analysis.report import result_columns
from loadtester.analysis.thresholds import evaluate as evaluate_thresholds
from loadtester.feed import Variants
from loadtester.headers import stored_headers
from loadtester.run.runner import RunControl, RunResult, run_blast
from loadtester.spec import RunSpec
from loadtester.units import utc_now_iso


def environment() -> dict:
    import apsw
    import httptools
    import uvloop
    return {
        "hostname": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "loadtester": __version__,
        "uvloop": uvloop.__version__, "httptools": httptools.__version__,
        "sqlite": apsw.sqlite_lib_version(), "apsw": apsw.apsw_version(),
    }


def run_columns(spec: RunSpec, store_mode: str) -> dict:
    """test_runs columns known before the run starts."""
    return {
        "host": spec.url.host, "url": spec.url.text, "method": spec.method,
        "total_users": spec.connections, "ramp_up_sec": spec.ramp_up_s,
        "duration": spec.duration_s, "requests_limit": spec.requests,
        "mode": spec.mode, "rate": spec.rate_per_s or None, "workers": spec.workers,
        "label": spec.label or None,
        "body": None,                   # not kept: config has its size and sha256
        "headers": json.dumps(dict(stored_headers(spec.headers))), "config": json.dumps(spec.config()),
        "environment": json.dumps(environment()), "store_mode": store_mode,
        "run_group": spec.run_group or None,
        "shard": f"{spec.shard[0]}/{spec.shard[1]}" if spec.shard[1] > 1 else None,
    }


def outcomes(responses: int, successes: int, failed: int) -> dict[str, int]:
    """Requests, successes and errors from the engine's [responses, successes, failed
    requests] (a response that is no success is an error too)."""
    return {"requests": responses + failed, "successes": successes,
            "errors": responses - successes + failed}


def target_latency(spec: RunSpec, result: RunResult) -> list[_engine.Histogram] | None:
    """Each target's (or journey step's) latency histogram, when it was measured: shaped
    runs keep one per target; a shaped run of one target has the run's."""
    if result.target_latency is not None:
        return result.target_latency
    return [result.latency] if len(spec.targets) == 1 and spec.traffic else None


def target_entries(spec: RunSpec, result: RunResult) -> list[dict]:
    """Per target (or journey step): its counts, and its latency when it was measured."""
    entries = []
    latency = target_latency(spec, result)
    for index, (target, counts) in enumerate(zip(spec.targets, result.targets)):
        entry = {"url": target.url.text, "method": target.method, **outcomes(*counts)}
        if spec.weighted:
            entry["weight"] = target.weight
        if latency is not None:
            entry["latency_ms"] = report_mod.latency_summary_ms(latency[index])
        entries.append(entry)
    return entries


def address_entries(spec: RunSpec, counts: dict[str, list[int]]) -> list[dict]:
    """Per address of the pins with several (--resolve HOST:PORT:A,B), in their order: its
    connections and what they got ([connections, responses, successes, failed] each)."""
    entries = []
    for pin in spec.pins:
        for address in pin.addresses:
            if address in counts:
                connections, *answered = counts[address]
                entries.append({"address": address, "connections": connections,
                                **outcomes(*answered)})
    return entries


def variant_counts_blob(variants: Variants, counts: Sequence[int]) -> bytes:
    """test_runs.variant_counts: per variant of the data's targets, its row, counts and
    request line (store/variants.py)."""
    rows = itertools.chain.from_iterable(variants.row_order for rendered in variants.requests
                                         if rendered)
    lines = (request[:request.index(b" HTTP/1.1\r\n")] for rendered in variants.requests
             for request in rendered)
    triples = zip(counts[0::3], counts[1::3], counts[2::3])
    return store.pack_variant_counts(rows, triples, lines)


class ErrorRateBreaker:
    """PipeOps' circuit breaker: stop the run once the share of failed requests so far
    reaches `limit` (after at least MIN_ATTEMPTS, so one early error cannot trip it)."""
    MIN_ATTEMPTS = 20

    def __init__(self, limit: float, control: RunControl):
        self.limit = limit
        self.control = control
        self.attempts = 0
        self.errors = 0

    def __call__(self, second, counters, latency):
        self.attempts += counters.responses + counters.transport_errors
        self.errors += counters.error_count
        if self.attempts >= self.MIN_ATTEMPTS and self.errors >= self.limit * self.attempts:
            self.control.stop("aborted")


class _Progress:
    """The live line: one per second, on stderr, overwritten in place."""

    def __init__(self):
        self.errors = 0

    def __call__(self, second, counters, latency):
        self.errors += counters.error_count
        sys.stderr.write("\r" + report_mod.progress_line(second, counters, latency, self.errors))
        sys.stderr.flush()

    def close(self):
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def _each(*callbacks):
    callbacks = [c for c in callbacks if c is not None]
    if not callbacks:
        return None

    def call_all(*args):
        for callback in callbacks:
            callback(*args)
    return call_all


def blast(spec: RunSpec, *, db=None, store_mode: str = "requests", progress: bool = False,
          thresholds=(), abort_error_rate: float | None = None, run_uuid: str | None = None,
          mask_host: bool = False) -> dict:
    """Run one blast, store it, and return its report (the --json dict).
    `run_uuid` lets a caller (the web server) know the run's uuid before it starts."""
    path = store.resolve_db_path(db)
    writer = store.RunWriter(path, store_mode=store_mode)
    columns = run_columns(spec, store_mode)
    if run_uuid:
        columns["uuid"] = run_uuid
    if mask_host:
        columns["mask_host"] = 1
    columns["started_at"] = utc_now_iso()
    run_id, uuid = writer.begin(columns)
    printer = _Progress() if progress else None
    control = RunControl()
    breaker = ErrorRateBreaker(abort_error_rate, control) if abort_error_rate else None
    try:
        result = run_blast(
            spec,
            on_records=writer.submit_records if store_mode == "requests" else None,
            on_window=writer.submit_window if store_mode != "none" else None,
            on_second=_each(printer, breaker), control=control)
    except BaseException:
        with contextlib.suppress(store.StoreError):
            writer.finish({"stop_reason": "failed"}, status="failed")
        raise
    finally:
        if printer is not None:
            printer.close()
    report = report_mod.summarize(
        spec_config=spec.config(), counters=result.counters, latency=result.latency,
        service=result.service, duration_s=result.duration_s, stop_reason=result.stop_reason,
        status=result.status, dropped_records=result.dropped_records,
        max_loop_lag_us=result.max_loop_lag_us, run_id=run_id, uuid=uuid, db_path=path,
        started_at=columns["started_at"],
        targets=target_entries(spec, result),
        busy_seconds=result.busy_seconds, worker_seconds=result.worker_seconds,
        error_messages=result.error_messages)
    if result.variants is not None:
        report["variants"] = store.variants_served(result.variants)
    if thresholds:
        report["thresholds"] = evaluate_thresholds(report, thresholds)
    if result.worker_errors:
        report["worker_errors"] = result.worker_errors
    if result.addresses:
        report["addresses"] = address_entries(spec, result.addresses)
    failure = None
    try:
        columns = result_columns(report, latency=result.latency, service=result.service,
                                 duration_s=result.duration_s, stop_reason=result.stop_reason,
                                 dropped_records=result.dropped_records,
                                 target_latency=target_latency(spec, result) if "targets" in report else None)
        if result.variants is not None and spec.variants is not None:
            columns["variant_counts"] = variant_counts_blob(spec.variants, result.variants)
        writer.finish(columns, status=result.status)
    except store.StoreError as exc:                  # the report needs no database: still given
        failure = f"{exc}; the next open marks the run interrupted"
    failure = failure or writer.store_failure
    if failure:
        report["status"] = "failed"
        report["storage"] = {
            "error": failure,
            "rows_not_stored": writer.dropped_records + writer.pending_records,
            "windows_not_stored": writer.dropped_windows + writer.pending_windows,
            "rows_in_spool": writer.pending_records,
            "spool": str(writer.spool_path) if writer.pending_records or writer.pending_windows else None,
        }
    else:
        report["dropped_records"] += writer.dropped_records   # rows the store itself shed
    if result.stop_signal:
        report["stop_signal"] = signal.Signals(result.stop_signal).name
    return report
