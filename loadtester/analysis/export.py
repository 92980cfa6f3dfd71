"""A run's rows written out as CSV, NDJSON or one JSON document: `loadtester export` and the
web app's GET /api/export/{uuid} write the same bytes."""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from loadtester import _engine
from loadtester.analysis.aggregate import merged_seconds
from loadtester.model import Window

CHUNK_ROWS = 4096
FORMATS = ("csv", "json", "ndjson")


def window_rows(windows: Iterable[Window]) -> tuple[tuple[str, ...], Iterator[dict[str, Any]]]:
    """(columns, rows): a run's per-second rows (its workers' windows added up)."""
    seconds = merged_seconds(windows)
    return (tuple(seconds[0]) if seconds else ()), iter(seconds)


def write_rows(out: IO[str], columns: Iterable[str], rows: Iterator[Any], fast: bool, fmt: str,
               report: dict[str, Any]) -> None:
    """Rows as CSV, NDJSON or one JSON document {"run": report, "rows": [...]}, written as
    they are read (memory stays flat however many rows).  fast: rows are tuples of integers
    in `columns` order (request rows), formatted without a dict per row."""
    end = "\r\n" if fmt == "csv" else "\n"            # (csv: as the csv module writes it)
    columns = tuple(columns)
    format_row: Callable[[Any], str]
    if fast:
        item = "{" + ", ".join(f'"{c}": %d' for c in columns) + "}"
        format_row = {"csv": ",".join(["%d"] * len(columns)), "ndjson": item,
                      "json": "    " + item}[fmt].__mod__
    elif fmt == "csv":
        format_row = csv_formatter(columns)
    elif fmt == "ndjson":
        format_row = json.dumps
    else:
        def format_row(row: Any) -> str:
            return "    " + json.dumps(row)
    if fmt == "json":
        out.write('{\n  "run": ' + json.dumps(report, indent=2).replace("\n", "\n  ") + ',\n  "rows": [')
    elif fmt == "csv":
        if not columns:
            return
        out.write(",".join(columns) + end)
    first = True
    while True:
        chunk = [format_row(r) for _, r in zip(range(CHUNK_ROWS), rows)]
        if not chunk:
            break
        if fmt == "json":
            out.write(("\n" if first else ",\n") + ",\n".join(chunk))
        else:
            out.write(end.join(chunk) + end)
        first = False
    if fmt == "json":
        out.write("]\n}\n" if first else "\n  ]\n}\n")


def csv_formatter(columns: Iterable[str]) -> Callable[[dict[str, Any]], str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="")

    def format_row(row: dict[str, Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        return buffer.getvalue()
    return format_row


# --------------------------------------------------------------------------- .hgrm

# HdrHistogram's percentile spectrum (outputPercentileDistribution, as wrk2 --u_latency
# prints it): levels 0, 10, 20 ... 50, 55 ... each half of the remaining distance to 100%
# split in this many steps.
HGRM_TICKS_PER_HALF_DISTANCE = 5
HGRM_UNIT_SCALE = 1000.0                    # values in ms, from the histogram's µs


def percentile_spectrum(hist: _engine.Histogram) -> list[tuple[int, float, int]]:
    """[(value µs, percentile level, count at or below value)], as HdrHistogram's
    PercentileIterator walks the recorded values: exact counts, each value a bucket's highest
    (clamped to the exact max), a last step at 100%.  [] for an empty histogram."""
    total = hist.total
    buckets = hist.buckets()
    if not total:
        return []
    out: list[tuple[int, float, int]] = []
    level, count = 0.0, 0
    for value, in_bucket in buckets:
        count += in_bucket
        while 100.0 * count / total >= level:
            out.append((value, level, count))
            ticks = HGRM_TICKS_PER_HALF_DISTANCE * 2 ** (int(math.log2(100.0 / (100.0 - level))) + 1)
            level += 100.0 / ticks
            if count == total:              # the last value: only the 100% step follows
                break
    out.append((buckets[-1][0], 100.0, total))
    return out


def render_hgrm(hist: _engine.Histogram) -> str:
    """The .hgrm text of `hist` (values in ms) that HdrHistogram's plotters and hdr-plot read."""
    scale = HGRM_UNIT_SCALE
    lines = [f"{'Value':>12} {'Percentile':>14} {'TotalCount':>10} {'1/(1-Percentile)':>14}", ""]
    for value, level, count in percentile_spectrum(hist):
        line = f"{value / scale:12.3f} {level / 100:2.12f} {count:10d}"
        lines.append(line if level == 100.0 else f"{line} {1 / (1 - level / 100):14.2f}")
    lines += [f"#[Mean    = {hist.mean_us / scale:12.3f}, StdDeviation   = {hist.stdev_us / scale:12.3f}]",
              f"#[Max     = {hist.max_us / scale:12.3f}, Total count    = {hist.total:12d}]",
              f"#[Buckets = {_engine.HISTOGRAM_BUCKETS:12d}, "
              f"SubBuckets     = {_engine.HISTOGRAM_SUB_BUCKETS:12d}]"]
    return "\n".join(lines) + "\n"
