"""A run's rows written out as CSV, NDJSON or one JSON document: `loadtester export` and the
web app's GET /api/export/{uuid} write the same bytes."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

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
