"""The only place windows are merged: per second, per run, per set of shards.

A window is one worker's one second (model.Window).  Counters add up and histograms merge
exactly (bucket by bucket), so any grouping of windows gives the numbers one big window
would have had: the runner's live seconds, `show`, `export`, `merge` and the web app's series
all come from the functions here."""
from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from loadtester import _engine
from loadtester.model import ERROR_KINDS, RECORD_FORMAT, Window, percentile_key

RECORD = struct.Struct(RECORD_FORMAT)


def hist_from_blob(blob: bytes | None) -> _engine.Histogram:
    """A stored histogram blob (or NULL: empty) as a Histogram."""
    return _engine.Histogram.from_bytes(bytes(blob)) if blob else _engine.Histogram()


def whole_run_histogram(row: dict[str, Any], windows: Callable[[], Iterable[Window]], *,
                        uncorrected: bool = False) -> _engine.Histogram:
    """A run's whole-run latency histogram (service time with `uncorrected`): its stored one,
    or for a run that ended before its summary was stored (killed, still running) its
    per-second windows merged (`windows()` is read only then)."""
    blob = row.get("service_hist" if uncorrected else "latency_hist")
    if blob:
        return hist_from_blob(blob)
    totals = Totals()
    for window in windows():
        totals.add(window)
    return totals.service if uncorrected else totals.latency


def pack_histograms(hists: Iterable[_engine.Histogram]) -> bytes:
    """test_runs.target_latency (schema 7): each histogram as a uint32 length and its bytes."""
    return b"".join(struct.pack("<I", len(blob)) + blob for blob in (h.to_bytes() for h in hists))


def unpack_histograms(blob: bytes | None) -> list[_engine.Histogram] | None:
    """pack_histograms' inverse; None for NULL or a blob that does not parse."""
    if not blob:
        return None
    data, at, hists = bytes(blob), 0, []
    try:
        while at < len(data):
            (size,) = struct.unpack_from("<I", data, at)
            if at + 4 + size > len(data):
                return None
            hists.append(_engine.Histogram.from_bytes(data[at + 4:at + 4 + size]))
            at += 4 + size
    except (struct.error, ValueError):
        return None
    return hists


def counters_from_row(row: dict[str, Any], max_wait_us: int = 0) -> _engine.Counters:
    """A run's summary columns (test_runs) as Counters (max_wait_us: the schedule lag to
    carry, in µs)."""
    status = {int(k): v for k, v in json.loads(row.get("status_codes") or "{}").items()}
    by_kind = json.loads(row.get("errors_by_kind") or "{}")
    errors = [0] * len(ERROR_KINDS)
    for kind, count in by_kind.items():
        if kind in ERROR_KINDS:
            errors[ERROR_KINDS.index(kind)] = count
    return _engine.Counters.from_dict({
        "responses": sum(status.values()), "successes": row.get("success_count") or 0,
        "bytes": row.get("bytes") or 0, "errors": errors, "status": status,
        "max_wait_us": max_wait_us})


@dataclasses.dataclass
class Totals:
    """Windows added up: counters, corrected and uncorrected latency, the worst lags."""
    counters: _engine.Counters = dataclasses.field(default_factory=_engine.Counters)
    latency: _engine.Histogram = dataclasses.field(default_factory=_engine.Histogram)
    service: _engine.Histogram = dataclasses.field(default_factory=_engine.Histogram)
    loop_lag_us: int = 0
    seconds: set[int] = dataclasses.field(default_factory=set)

    def add(self, window: Window) -> None:
        self.counters.merge(_engine.Counters.from_dict(window["counters"]))
        self.latency.merge(hist_from_blob(window.get("latency")))
        self.service.merge(hist_from_blob(window.get("service")))
        self.loop_lag_us = max(self.loop_lag_us, window.get("loop_lag_us") or 0)
        self.seconds.add(window["second"])

    def merge(self, other: Totals) -> None:
        self.counters.merge(other.counters)
        self.latency.merge(other.latency)
        self.service.merge(other.service)
        self.loop_lag_us = max(self.loop_lag_us, other.loop_lag_us)
        self.seconds |= other.seconds

    @property
    def requests(self) -> int:
        """Attempts: responses plus transport errors (test_runs.total_requests)."""
        return int(self.counters.responses + self.counters.transport_errors)

    def summary_columns(self) -> dict[str, Any]:
        """The test_runs summary columns these windows add up to (as RunWriter stores them)."""
        counters, latency = self.counters, self.latency
        status = {str(k): v for k, v in sorted(counters.status_counts().items())}
        return {
            "total_requests": self.requests, "success_count": counters.successes,
            "error_count": self.requests - counters.successes, "bytes": counters.bytes_read,
            "status_codes": json.dumps(status), "errors_by_kind": json.dumps(counters.errors_by_kind()),
            "latency_hist": latency.to_bytes(), "service_hist": self.service.to_bytes(),
            "avg_latency": latency.mean_us / 1000 if latency.total else None,
            "p99": latency.value_at_percentile(99) / 1000 if latency.total else None,
        }


def total(windows: Iterable[Window]) -> Totals:
    """Every window added into one Totals."""
    totals = Totals()
    for window in windows:
        totals.add(window)
    return totals


def by_second(windows: Iterable[Window]) -> dict[int, list[Window]]:
    """Windows grouped by second, seconds in order (workers in the order given)."""
    groups: dict[int, list[Window]] = {}
    for window in windows:
        groups.setdefault(window["second"], []).append(window)
    return dict(sorted(groups.items()))


def second_row(second: int, totals: Totals, percentiles: Sequence[float] = (50, 99)) -> dict[str, Any]:
    """One second's row: counts, one p<N>_ms key per percentile asked for (99.9 -> p999_ms),
    max_ms and loop_lag_ms.  `errors` are attempts that were not successes."""
    latency, counters = totals.latency, totals.counters
    return {
        "second": second, "requests": totals.requests, "successes": counters.successes,
        "errors": totals.requests - counters.successes, "bytes": counters.bytes_read,
        **{f"{percentile_key(p)}_ms": latency.value_at_percentile(p) / 1000
           if latency.total else None for p in percentiles},
        "max_ms": latency.max_us / 1000 if latency.total else None,
        "loop_lag_ms": totals.loop_lag_us / 1000,
    }


def merged_seconds(windows: Iterable[Window], percentiles: Sequence[float] = (50, 99),
                   detail: bool = False) -> list[dict[str, Any]]:
    """Per-second rows (second_row), the workers' windows added up.  detail=True adds
    "responses" (requests - transport errors) and "totals" (the second's Totals)."""
    rows = []
    for second, parts in by_second(windows).items():
        totals = total(parts)
        row = second_row(second, totals, percentiles)
        if detail:
            row["responses"] = totals.counters.responses
            row["totals"] = totals
        rows.append(row)
    return rows


def totals_of_records(blobs: Iterable[bytes]) -> Totals:
    """Totals rebuilt from packed request records (model.RECORD_FORMAT): what the windows of
    those requests would have held, for requests that no window counted."""
    responses = successes = nbytes = 0
    errors = [0] * len(ERROR_KINDS)
    status: dict[int, int] = {}
    totals = Totals()
    for blob in blobs:
        for _start, latency_us, wait_us, size, code, error, _worker in RECORD.iter_unpack(blob):
            if error:
                errors[error] += 1
                continue
            responses += 1
            successes += 100 <= code < 400
            nbytes += size
            status[code] = status.get(code, 0) + 1
            totals.latency.record_value(latency_us)
            totals.service.record_value(latency_us - wait_us)
    totals.counters = _engine.Counters.from_dict({
        "responses": responses, "successes": successes, "bytes": nbytes, "errors": errors,
        "status": status, "max_wait_us": 0})
    return totals


# The percentiles of a latency distribution plot (HdrHistogram's percentile curve): evenly
# spaced in "nines" (-log10(1 - p)), from p0 to p99.999, then the maximum.
CURVE_PERCENTILES: tuple[float, ...] = tuple(
    round(100 * (1 - 10 ** (-step / 10)), 6) for step in range(51)) + (100.0,)


def percentile_curve(hist: _engine.Histogram) -> list[dict[str, float]]:
    """[{percentile, ms}] of `hist` at CURVE_PERCENTILES (none when it is empty)."""
    if not hist.total:
        return []
    return [{"percentile": p, "ms": (hist.max_us if p >= 100 else hist.value_at_percentile(p)) / 1000}
            for p in CURVE_PERCENTILES]
