"""GET /metrics: the runs in the Prometheus text exposition format (version 0.0.4), so that a
Grafana user can watch a run.

Every run that is running, and the FINISHED_RUNS newest finished ones (?finished=N, at most
MAX_FINISHED_RUNS), labelled uuid, label and url (the url as the API shows it: masked when the
run asked for it):

    loadtester_run_info{...,status,result} 1           status, and result once it ended
    loadtester_requests_total                          attempts: responses + transport errors
    loadtester_responses_total{...,code}               responses by HTTP status
    loadtester_errors_total{...,kind}                  failed attempts by kind: the transport
                                                       kinds (connect, timeout, read, write,
                                                       parse) and status (a response outside
                                                       1xx-3xx)
    loadtester_latency_seconds_bucket{...,le}, _sum, _count
                                                       corrected latency of the responses, from
                                                       the run's HdrHistogram (BUCKETS_S)
    loadtester_in_flight                               running runs: requests in flight at the
                                                       end of the newest stored second

A finished run's numbers come from its stored summary (the merged histogram blob), a running
or unfinished one's from its stored per-second windows.  Counters of a finished run stay
constant, so rate() over them is 0 once it ended."""
from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import apsw

from loadtester import _engine
from loadtester.analysis import aggregate
from loadtester.analysis.verdict import judge
from loadtester.model import ERROR_KINDS
from loadtester.reports.display import display_url
from loadtester.store import queries
from loadtester.web import reads
from loadtester.web.context import ServeContext

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FINISHED_RUNS = 20
MAX_FINISHED_RUNS = 500
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
             30.0, 60.0)
TRANSPORT_KINDS = tuple(kind for kind in ERROR_KINDS if kind != "none")

# The histogram blob (engine/histogram.pyx, Histogram.to_bytes): this header, then
# (bucket index gap, count) pairs as unsigned LEB128 varints.
_BLOB_HEADER = struct.Struct("<4sqQQQQQ")


# --------------------------------------------------------------------------- histogram buckets

@functools.cache
def bucket_tops_us() -> tuple[int, ...]:
    """The highest value (µs) of each of the engine's histogram buckets, by bucket index
    (the engine's own layout, walked through _engine.bucket_bounds)."""
    tops: list[int] = []
    value = 0
    while True:
        _low, high = _engine.bucket_bounds(value)
        if high < value:                      # past the last bucket (values are clamped into it)
            return tuple(tops)
        tops.append(high)
        value = high + 1


def _varints(blob: bytes, pos: int) -> Iterator[int]:
    value = shift = 0
    for byte in blob[pos:]:
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            yield value
            value = shift = 0
        else:
            shift += 7


def bucket_counts(hist: _engine.Histogram) -> list[tuple[int, int]]:
    """(highest value in µs, count) of every non-empty bucket, lowest first; a bucket's top
    is clamped to the histogram's exact maximum."""
    tops = bucket_tops_us()
    numbers = _varints(hist.to_bytes(), _BLOB_HEADER.size)
    out, index = [], -1
    for gap, count in zip(numbers, numbers):
        index += gap
        out.append((min(tops[index], hist.max_us), count))
    return out


def cumulative_buckets(hist: _engine.Histogram, bounds_s: Iterable[float]) -> list[int]:
    """Prometheus buckets: for each bound, the samples at or below it (a bucket counts under a
    bound when its highest value is at or below it)."""
    counts = bucket_counts(hist)
    out, seen, i = [], 0, 0
    for bound in bounds_s:
        limit_us = bound * 1_000_000
        while i < len(counts) and counts[i][0] <= limit_us:
            seen += counts[i][1]
            i += 1
        out.append(seen)
    return out


# --------------------------------------------------------------------------- the text format

def escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(base: dict[str, str], **more: object) -> str:
    pairs = {**base, **{k: str(v) for k, v in more.items()}}
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in pairs.items()) + "}"


def number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


FAMILIES = (
    ("loadtester_run_info", "gauge", "A run: its status and (once it ended) its result."),
    ("loadtester_requests_total", "counter", "Attempts: responses and transport errors."),
    ("loadtester_responses_total", "counter", "Responses by HTTP status code."),
    ("loadtester_errors_total", "counter",
     "Failed attempts by kind: transport errors, and status (a response outside 1xx-3xx)."),
    ("loadtester_latency_seconds", "histogram",
     "Latency of the responses (corrected: from the intended send time)."),
    ("loadtester_in_flight", "gauge", "Requests in flight at the end of the newest second."),
)


def run_samples(run: dict[str, Any]) -> dict[str, list[str]]:
    """Sample lines by family for one run (see collect() for `run`)."""
    base = run["labels"]
    counters: _engine.Counters = run["counters"]
    hist: _engine.Histogram = run["latency"]
    attempts = counters.responses + counters.transport_errors
    by_kind = counters.errors_by_kind()
    lines: dict[str, list[str]] = {name: [] for name, _kind, _help in FAMILIES}
    lines["loadtester_run_info"].append(
        f"loadtester_run_info{labels(base, status=run['status'], result=run['result'] or '')} 1")
    lines["loadtester_requests_total"].append(f"loadtester_requests_total{labels(base)} {attempts}")
    for code, count in sorted(counters.status_counts().items()):
        lines["loadtester_responses_total"].append(
            f"loadtester_responses_total{labels(base, code=code)} {count}")
    errors = lines["loadtester_errors_total"]
    for kind in TRANSPORT_KINDS:
        errors.append(f"loadtester_errors_total{labels(base, kind=kind)} {by_kind.get(kind, 0)}")
    errors.append(f"loadtester_errors_total{labels(base, kind='status')} "
                  f"{counters.responses - counters.successes}")
    latency = lines["loadtester_latency_seconds"]
    for bound, count in zip(BUCKETS_S, cumulative_buckets(hist, BUCKETS_S)):
        latency.append(f"loadtester_latency_seconds_bucket{labels(base, le=number(bound))} {count}")
    latency.append(f"loadtester_latency_seconds_bucket{labels(base, le='+Inf')} {hist.total}")
    latency.append(f"loadtester_latency_seconds_sum{labels(base)} {number(hist.sum_us / 1e6)}")
    latency.append(f"loadtester_latency_seconds_count{labels(base)} {hist.total}")
    if run["in_flight"] is not None:
        lines["loadtester_in_flight"].append(f"loadtester_in_flight{labels(base)} {run['in_flight']}")
    return lines


def render(runs: list[dict[str, Any]]) -> str:
    """The exposition: each family once (HELP, TYPE), then its samples for every run."""
    per_run = [run_samples(run) for run in runs]
    out = []
    for name, kind, text in FAMILIES:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        for samples in per_run:
            out += samples[name]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the runs

def _run_numbers(ctx: ServeContext, conn: apsw.Connection, row: dict[str, Any]) -> dict[str, Any]:
    """counters, latency, status, result and in_flight of one run (a full test_runs row)."""
    status = row["status"]
    in_flight = None
    if status != "running" and row.get("latency_hist") is not None:
        counters = aggregate.counters_from_row(row)
        latency = aggregate.hist_from_blob(row["latency_hist"])
    else:
        series = ctx.cache.get(conn, row)
        counters, latency = series.totals.counters, series.totals.latency
        if status == "running":
            last = series.rows[-1]["second"] - 1 if series.rows else 0
            in_flight = reads.in_flight_now(conn, row["id"], last) or 0
    verdict = judge(row, counters.successes)
    return {"counters": counters, "latency": latency, "status": status,
            "result": verdict.result, "in_flight": in_flight}


def collect(ctx: ServeContext, conn: apsw.Connection, finished: int) -> list[dict[str, Any]]:
    """The runs /metrics shows: every running one, then the `finished` newest others."""
    running = queries.running_runs(conn)
    others = [r for r in reads.newest_runs(conn, finished + len(running))
              if r["status"] != "running"][:finished] if finished else []
    runs = []
    for summary in running + others:
        row = reads.full_run(conn, summary["uuid"])
        if row is None:                                   # deleted in between
            continue
        base = {"uuid": row["uuid"], "label": row.get("label") or "",
                "url": display_url(row.get("url"), bool(row.get("mask_host")))
                or ""}
        runs.append({"labels": base, **_run_numbers(ctx, conn, row)})
    return runs


def exposition(ctx: ServeContext, finished: int = FINISHED_RUNS) -> str:
    """The text GET /metrics answers (blocking: run it in the thread pool)."""
    with ctx.reader() as conn:
        return render(collect(ctx, conn, finished))
