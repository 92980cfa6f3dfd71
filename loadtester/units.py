"""Durations, byte counts, milliseconds and timestamps: parsed and formatted in one place."""
from __future__ import annotations

import datetime as _dt
import re

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(us|µs|ms|s|sec|m|min|h|d|w)?\s*$", re.IGNORECASE)
_DURATION_UNITS_S = {None: 1.0, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0,
                     "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


class UnitError(ValueError):
    """Text that is not a duration (or rate); the message is one line for the user."""


def parse_duration_s(text: str, what: str = "duration", *, unit_required: bool = False) -> float:
    """'10s', '2m', '500ms', '1.5h', '30d', '2w', '30' (seconds, unless unit_required) -> seconds."""
    match = _DURATION_RE.match(str(text))
    if not match or (unit_required and not match.group(2)):
        raise UnitError(f"invalid {what} {text!r}: use a number with a unit, e.g. 500ms, 10s, 2m")
    unit = match.group(2)
    return float(match.group(1)) * _DURATION_UNITS_S[unit.lower() if unit else None]


def format_ms(value: float | None, sep: str = "", micro: str = "us") -> str:
    """Milliseconds for people: 1.23s, 4.56ms, 789us (`sep` goes before the unit; `micro` is
    the microseconds' unit: "us" for terminals, "\u00b5s" in reports)."""
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:,.2f}{sep}s"
    if value >= 1:
        return f"{value:.2f}{sep}ms"
    return f"{value * 1000:.0f}{sep}{micro}"


def format_bytes(n: float | None, sep: str = " ", digits: int = 1) -> str:
    """Bytes for people, in powers of 1024: 512 B, 1.5 KiB, 3.2 MiB; '-' for None."""
    if n is None:
        return "-"
    size = float(n)
    for unit in _BYTE_UNITS:
        if size < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{size:.0f}{sep}B" if unit == "B" else f"{size:.{digits}f}{sep}{unit}"
        size /= 1024
    raise AssertionError("unreachable")


def iso_utc(value: _dt.datetime) -> str:
    """An aware datetime as ISO-8601 UTC with milliseconds: 2025-11-25T01:40:00.123Z."""
    return value.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso_utc(text: object) -> _dt.datetime | None:
    """A stored timestamp back as an aware datetime (no zone means UTC); None when unreadable."""
    if not text:
        return None
    try:
        value = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)


def format_utc(text: object) -> str:
    """A stored timestamp for people, labelled as UTC: 2025-11-25 01:40:00 UTC ('-' when
    unknown)."""
    value = parse_iso_utc(text)
    return value.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def utc_now_iso() -> str:
    """Now as ISO-8601 UTC with milliseconds: 2025-11-25T01:40:00.123Z."""
    return iso_utc(_dt.datetime.now(_dt.UTC))
