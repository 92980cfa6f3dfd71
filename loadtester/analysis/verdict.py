"""A run's result beside its status: did it pass?

    "failed"         the run failed (status 'failed': a worker died, the blast crashed), got
                     no successful response at all, broke a stored threshold, or was stopped
                     by the error-rate circuit breaker (stop_reason 'aborted')
    "passed"         it had thresholds and every one passed
    "no thresholds"  it ended with successful responses and had no thresholds to judge by
    None             it is still running

Stopped and interrupted runs are judged by the same rules on what they did (their status says
that they did not run to the end).  `reason` is one line saying why a run failed."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

FAILED = "failed"
PASSED = "passed"
NO_THRESHOLDS = "no thresholds"
CIRCUIT_BREAKER_STOP = "aborted"           # the stop_reason of a run the breaker stopped


def stored_json(value: object, default: Any) -> Any:
    """A JSON column as stored (text), parsed; `default` when empty or unreadable."""
    if value is None or value == "":
        return default
    if isinstance(value, (dict, list)):
        return value
    try:
        parsed = json.loads(str(value))
    except ValueError:
        return default
    return parsed if isinstance(parsed, type(default)) else default


@dataclass
class Verdict:
    result: str | None
    reason: str | None = None


def _no_response_reason(errors_by_kind: dict[str, int], error_messages: dict[str, str]) -> str:
    counts = ", ".join(f"{kind} {count:,}" for kind, count in errors_by_kind.items() if count)
    first = next(iter(error_messages.items()), None)
    text = "no successful response"
    if counts:
        text += f": {counts}"
    if first:
        text += f" (first {first[0]} error: {first[1]})"
    return text


def judge(run: dict[str, Any], successes: int | None, error_line: str | None = None) -> Verdict:
    """The verdict on `run` (a test_runs row, or the same keys: status, stop_reason and the
    JSON columns thresholds, error_messages, errors_by_kind, worker_errors, as stored or
    parsed).  successes: its successful responses (None: unknown, taken as none);
    error_line: why a run that never stored a row failed."""
    status = run.get("status")
    if status == "running":
        return Verdict(None)
    if status == "failed":
        deaths = stored_json(run.get("worker_errors"), [])
        reason = deaths[0] if deaths else (error_line or "the run failed")
        return Verdict(FAILED, f"the run failed: {reason}")
    if not successes:
        return Verdict(FAILED, _no_response_reason(stored_json(run.get("errors_by_kind"), {}),
                                                   stored_json(run.get("error_messages"), {})))
    if run.get("stop_reason") == CIRCUIT_BREAKER_STOP:
        return Verdict(FAILED, "stopped by the error-rate circuit breaker")
    thresholds = stored_json(run.get("thresholds"), [])
    broken = [t for t in thresholds if isinstance(t, dict) and not t.get("passed")]
    if broken:
        names = ", ".join(str(t.get("expression")) for t in broken)
        return Verdict(FAILED, f"threshold{'s' if len(broken) > 1 else ''} not met: {names}")
    if thresholds:
        return Verdict(PASSED)
    return Verdict(NO_THRESHOLDS)
