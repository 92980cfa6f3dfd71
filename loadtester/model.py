"""The shapes every layer shares: error kinds, run statuses and one stored window.

ERROR_KINDS is read from the engine, which defines them (engine/_engine.pxd, ErrorKind), so
the store, the reports and the web app cannot drift from what the hot path counts."""
from __future__ import annotations

import struct
from typing import TypedDict

from loadtester import _engine


class SpecError(ValueError):
    """Bad input to a run (options, URLs, headers, files): a one-line message for the user;
    the CLI exits 2 with it, the web API answers 400."""


ERROR_KINDS: tuple[str, ...] = tuple(_engine.ERROR_NAMES)      # index = the stored error code
RUN_STATUSES = ("running", "completed", "stopped", "failed", "interrupted")
STORE_MODES = ("requests", "windows", "none")

# The engine's request record (start_us since the run's start, latency_us corrected, wait_us,
# bytes, status, error, worker): little-endian, 24 bytes.  One definition: the engine's.
RECORD_FORMAT: str = _engine.RECORD_FORMAT
RECORD_SIZE = struct.calcsize(RECORD_FORMAT)
assert RECORD_SIZE == _engine.RECORD_SIZE == 24


class CountersDict(TypedDict):
    """Counters.to_dict(): what one window (or run) counted."""
    responses: int
    successes: int
    bytes: int
    errors: list[int]               # indexed by ERROR_KINDS
    status: dict[int, int]
    max_wait_us: int


class Window(TypedDict, total=False):
    """One worker's one second, in the one shape every layer passes around: what the engine
    hands the runner, what RunWriter.submit_window() takes and what queries.run_windows()
    gives back (which adds the metric_windows columns as stored)."""
    second: int
    worker: int
    counters: CountersDict
    latency: bytes | None           # Histogram.to_bytes() (corrected latency)
    service: bytes | None           # Histogram.to_bytes() (uncorrected)
    loop_lag_us: int | None         # (NULL in a stored row that has none)
    in_flight: int | None
    cpu_us: int | None
    partial: bool                   # the run ended inside this second
    # queries.run_windows() only: the metric_windows columns as stored
    test_run_id: int
    requests: int
    successes: int
    errors: int
    error_kinds: str | None         # JSON text
    status_codes: str | None        # JSON text
    latency_hist: bytes | None
    service_hist: bytes | None
    max_wait_us: int | None
    bytes: int                      # (last: from here on `bytes` in this class is this key)


def percentile_key(p: float) -> str:
    """The report's key for a percentile: 50 -> p50, 99.9 -> p999."""
    return "p" + f"{p:g}".replace(".", "")
