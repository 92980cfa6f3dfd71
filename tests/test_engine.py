"""The compiled engine's numbers: histogram accuracy, exact merges, the pacer."""
import math
import random

import pytest

from loadtester import _engine


def exact_percentile(sorted_values, p):
    """Nearest rank: the smallest value with at least p% of samples at or below."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values) - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def test_every_bucket_is_within_one_percent_from_1us_to_100s():
    value = 1
    while value <= 100_000_000:
        low, high = _engine.bucket_bounds(value)
        assert low <= value <= high
        assert (high - low) <= 0.01 * low or high == low
        value = int(value * 1.07) + 1


def test_histogram_percentiles_match_exact_percentiles_of_raw_samples():
    rng = random.Random(7)
    samples = [max(1, int(rng.lognormvariate(8, 1.5))) for _ in range(200_000)]
    samples += [rng.randint(1, 300) for _ in range(5_000)]          # exact region
    samples += [rng.randint(10_000_000, 120_000_000) for _ in range(50)]  # 10-120 s
    hist = _engine.Histogram()
    for value in samples:
        hist.record_value(value)
    ordered = sorted(samples)
    for p in (1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100):
        exact = exact_percentile(ordered, p)
        got = hist.value_at_percentile(p)
        assert abs(got - exact) <= 0.01 * exact, (p, got, exact)
    assert hist.total == len(samples)
    assert hist.min_us == ordered[0] and hist.max_us == ordered[-1]
    assert hist.mean_us == pytest.approx(sum(samples) / len(samples))
    mean = sum(samples) / len(samples)
    stdev = math.sqrt(sum((v - mean) ** 2 for v in samples) / len(samples))
    assert hist.stdev_us == pytest.approx(stdev, rel=1e-6)


def test_merge_is_exact_and_serialization_round_trips():
    rng = random.Random(3)
    parts = [[rng.randint(1, 5_000_000) for _ in range(20_000)] for _ in range(3)]
    merged, whole = _engine.Histogram(), _engine.Histogram()
    for part in parts:
        hist = _engine.Histogram()
        for value in part:
            hist.record_value(value)
            whole.record_value(value)
        merged.merge(_engine.Histogram.from_bytes(hist.to_bytes()))
    assert merged.to_bytes() == whole.to_bytes()
    for p in (50, 90, 99, 99.9):
        assert merged.value_at_percentile(p) == whole.value_at_percentile(p)
    assert len(whole.to_bytes()) < 8_000          # sparse: far below the 35 KB of counters


def test_empty_histogram_and_bad_blobs():
    hist = _engine.Histogram()
    assert hist.total == 0 and hist.value_at_percentile(99) == 0
    again = _engine.Histogram.from_bytes(hist.to_bytes())
    assert again.total == 0
    with pytest.raises(ValueError):
        _engine.Histogram.from_bytes(b"nonsense")
    blob = bytearray(_engine.Histogram().to_bytes())
    hist.record_value(5)
    with pytest.raises(ValueError):
        _engine.Histogram.from_bytes(hist.to_bytes()[:-1])
    assert bytes(blob)


def test_counters_round_trip_and_merge():
    a = _engine.Counters.from_dict({"responses": 10, "successes": 8, "bytes": 100,
                                    "errors": [0, 1, 2, 0, 0, 0], "status": {200: 8, 500: 2}})
    b = _engine.Counters.from_dict(a.to_dict())
    a.merge(b)
    assert a.responses == 20 and a.successes == 16 and a.bytes_read == 200
    assert a.status_counts() == {200: 16, 500: 4}
    assert a.errors_by_kind() == {"connect": 2, "timeout": 4, "status": 4}
    assert a.error_count == 10


def test_pacer_without_ramp_is_a_fixed_timetable():
    rate = 1000.0
    assert _engine.pacer_wait_ns(0, 0, rate) == 0
    assert _engine.pacer_wait_ns(0, 1, rate) == 1_000_000
    assert _engine.pacer_wait_ns(500_000, 1, rate) == 500_000
    assert _engine.pacer_wait_ns(5_000_000, 1, rate) == 0          # overdue: send now
    # Driven without a clock: the sent count follows elapsed * rate exactly.
    sent = 0
    for elapsed_ms in range(0, 10_001):
        while _engine.pacer_wait_ns(elapsed_ms * 1_000_000, sent, rate) == 0:
            sent += 1
    assert sent == 10_001


def test_pacer_ramp_grows_linearly_to_the_rate():
    rate, ramp = 1000.0, 10.0
    per_second = []
    sent = 0
    for second in range(20):
        start = sent
        for ms in range(1000):
            elapsed_ns = (second * 1000 + ms) * 1_000_000
            while _engine.pacer_wait_ns(elapsed_ns, sent, rate, ramp) == 0:
                sent += 1
        per_second.append(sent - start)
    # during the ramp, second k carries about rate * (k + 0.5) / ramp
    for k in range(10):
        assert per_second[k] == pytest.approx(rate * (k + 0.5) / ramp, abs=2)
    assert all(abs(n - rate) <= 2 for n in per_second[11:])


def test_record_layout_is_24_bytes():
    assert _engine.RECORD_SIZE == 24
