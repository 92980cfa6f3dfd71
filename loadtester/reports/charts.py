"""The reports' charts: series from the per-second rows, scaled into a plot box (Chart),
with round axis ticks; drawn as SVG by htmlreport and as lines by pdfreport."""
from __future__ import annotations

import math

COLORS = {"rps": "#2563eb", "errors": "#e11d48", "p50": "#16a34a", "p95": "#d97706",
          "p99": "#dc2626", "success": "#7c3aed"}


def nice_ceiling(value: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at least value (and > 0)."""
    if not value or value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10 ** exponent
        if candidate >= value * (1 - 1e-9):
            return float(candidate)
    return float(10 ** (exponent + 1))


def ticks(lo: float, hi: float, count: int, min_step: float = 0.0) -> list[float]:
    if hi <= lo:
        return [lo]
    step = max(min_step, nice_ceiling((hi - lo) / max(1, count)))
    first = math.ceil(lo / step) * step
    out, v = [], first
    while v <= hi + step * 1e-9:
        out.append(round(v, 10))
        v += step
    return out


def tick_label(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


class Chart:
    """Scales series of (x, y) values into a plot box; shared by the SVG and the PDF."""

    def __init__(self, xs: list, series: list[tuple[str, str, list]], *, y_max=None,
                 left: float, top: float, width: float, height: float):
        self.xs = list(xs)
        self.series = series
        self.left, self.top, self.width, self.height = left, top, width, height
        values = [v for _, _, ys in series for v in ys if v is not None]
        if y_max is None:
            highest = max(values) if values else 0.0
            top = highest if highest > 0 else 1.0
            self.y_step = nice_ceiling(top / 4)
            self.y_max = math.ceil(top / self.y_step - 1e-9) * self.y_step
            if highest > 0.95 * self.y_max:               # keep a flat line off the frame
                self.y_max += self.y_step
        else:
            self.y_max = float(y_max)
            self.y_step = nice_ceiling(self.y_max / 4)
        self.x_min = min(self.xs) if self.xs else 0
        self.x_max = max(self.xs) if self.xs else 1
        if self.x_max == self.x_min:
            self.x_min, self.x_max = self.x_min - 1, self.x_max + 1

    def px(self, x) -> float:
        return self.left + (x - self.x_min) / (self.x_max - self.x_min) * self.width

    def py(self, y) -> float:
        y = min(max(y, 0.0), self.y_max)
        return self.top + self.height - (y / self.y_max) * self.height

    def segments(self, ys: list) -> list[list[tuple[float, float]]]:
        """Runs of consecutive known values, as point lists (a None breaks the line)."""
        out: list[list[tuple[float, float]]] = []
        current: list[tuple[float, float]] = []
        for x, y in zip(self.xs, ys):
            if y is None:
                if current:
                    out.append(current)
                current = []
                continue
            current.append((self.px(x), self.py(y)))
        if current:
            out.append(current)
        return out

    def y_ticks(self) -> list[float]:
        count = int(round(self.y_max / self.y_step))
        return [round(i * self.y_step, 10) for i in range(count + 1)]

    def x_ticks(self) -> list[float]:
        if not self.xs:
            return []
        return [t for t in ticks(self.x_min, self.x_max, 8, min_step=1.0)
                if self.x_min <= t <= self.x_max]


def chart_series(seconds: list[dict]) -> dict:
    """The three charts' series from timeseries rows: throughput (responses and errors per
    second), latency (p50, p95, p99) and success rate."""
    xs = [s["second"] for s in seconds]
    return {
        "xs": xs,
        "rps": [("req/s", COLORS["rps"], [s.get("rps") for s in seconds]),
                ("errors/s", COLORS["errors"], [s.get("errors") for s in seconds])],
        "latency": [("p50", COLORS["p50"], [s.get("p50_ms") for s in seconds]),
                    ("p95", COLORS["p95"], [s.get("p95_ms") for s in seconds]),
                    ("p99", COLORS["p99"], [s.get("p99_ms") for s in seconds])],
        "success": [("success %", COLORS["success"],
                     [None if s.get("success_rate") is None else s["success_rate"] * 100
                      for s in seconds])],
    }


def has_values(series: list) -> bool:
    """Whether a chart has anything to draw (else it says 'no responses', not blank axes)."""
    return any(v is not None for _, _, ys in series for v in ys)
