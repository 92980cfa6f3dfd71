# Open-loop pacing: a fixed timetable, pure functions of (index or elapsed, sent).
# Included by _engine.pyx.


cpdef double intended_offset_s(int64_t index, double rate_per_s, double ramp_up_s):
    """Seconds after the start at which request `index` (0-based) is due.

    Without ramp-up the timetable is index / rate. With ramp-up the rate grows
    linearly from 0 to `rate_per_s` over `ramp_up_s`, so the number due by time t
    is rate*t^2/(2*ramp) during the ramp and rate*(t - ramp/2) after it; this is
    that count's inverse.
    """
    cdef double ramp_count
    if rate_per_s <= 0:
        return 0.0
    if ramp_up_s <= 0:
        return index / rate_per_s
    ramp_count = rate_per_s * ramp_up_s / 2.0
    if index < ramp_count:
        return sqrt(2.0 * ramp_up_s * index / rate_per_s)
    return index / rate_per_s + ramp_up_s / 2.0


cpdef int64_t pacer_wait_ns(int64_t elapsed_ns, int64_t sent, double rate_per_s,
                            double ramp_up_s=0.0):
    """How long to wait before sending the next request, given how many were
    sent after `elapsed_ns`; 0 when it is due (or overdue)."""
    cdef int64_t due_ns = <int64_t>(intended_offset_s(sent, rate_per_s, ramp_up_s) * 1e9)
    return due_ns - elapsed_ns if due_ns > elapsed_ns else 0
