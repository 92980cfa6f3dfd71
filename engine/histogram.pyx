# Latency histogram (log-linear, HdrHistogram layout), counters and recorder.
# Included by _engine.pyx.

HISTOGRAM_MAGIC = b"LTH1"
# The layout, in HdrHistogram's terms (its .hgrm footer): 2 significant digits.
HISTOGRAM_SUB_BUCKETS = SUB_BUCKET_COUNT
HISTOGRAM_BUCKETS = MAX_SHIFT + 1
cdef object _HEADER = struct.Struct("<4sqQQQQQ")   # magic, total, min, max, sum, sum_sq lo/hi


cdef inline int _bit_length(uint64_t value) noexcept nogil:
    if value == 0:
        return 0
    return 64 - __builtin_clzll(value)


cdef inline Py_ssize_t _index_of(uint64_t value_us) noexcept nogil:
    cdef int shift
    if value_us < SUB_BUCKET_COUNT:
        return <Py_ssize_t>value_us
    shift = _bit_length(value_us) - SUB_BUCKET_BITS
    if shift > MAX_SHIFT:
        return COUNTS_LEN - 1
    return (SUB_BUCKET_COUNT + (shift - 1) * SUB_BUCKET_HALF
            + <Py_ssize_t>((value_us >> shift) - SUB_BUCKET_HALF))


cdef inline uint64_t _lowest_of(Py_ssize_t index) noexcept nogil:
    cdef Py_ssize_t k
    cdef int shift
    if index < SUB_BUCKET_COUNT:
        return <uint64_t>index
    k = index - SUB_BUCKET_COUNT
    shift = <int>(k // SUB_BUCKET_HALF) + 1
    return (<uint64_t>(k % SUB_BUCKET_HALF + SUB_BUCKET_HALF)) << shift


cdef inline uint64_t _highest_of(Py_ssize_t index) noexcept nogil:
    if index < SUB_BUCKET_COUNT:
        return <uint64_t>index
    return _lowest_of(index + 1) - 1 if index + 1 < COUNTS_LEN else _lowest_of(index) * 2 - 1


cdef Py_ssize_t _put_varint(unsigned char* out, uint64_t value) noexcept nogil:
    cdef Py_ssize_t n = 0
    while value >= 0x80:
        out[n] = <unsigned char>((value & 0x7F) | 0x80)
        value >>= 7
        n += 1
    out[n] = <unsigned char>value
    return n + 1


cdef uint64_t _get_varint(const unsigned char* data, Py_ssize_t size, Py_ssize_t* pos) except? 0:
    cdef uint64_t value = 0
    cdef int shift = 0
    while True:
        if pos[0] >= size or shift > 63:
            raise ValueError("truncated histogram blob")
        value |= (<uint64_t>(data[pos[0]] & 0x7F)) << shift
        pos[0] += 1
        if data[pos[0] - 1] < 0x80:
            return value
        shift += 7


def bucket_bounds(uint64_t value_us):
    """The [lowest, highest] range of values that share value_us's bucket."""
    cdef Py_ssize_t index = _index_of(value_us)
    return _lowest_of(index), _highest_of(index)


@cython.final
cdef class Histogram:
    """Fixed-size latency histogram in microseconds; merge is exact."""

    def __cinit__(self):
        self.reset()

    cdef void record(self, uint64_t value_us) noexcept:
        self.counts[_index_of(value_us)] += 1
        self.total += 1
        if value_us < self.min_us:
            self.min_us = value_us
        if value_us > self.max_us:
            self.max_us = value_us
        self.sum_us += value_us
        self.sum_sq_us += <uint128_t>value_us * <uint128_t>value_us

    def record_value(self, uint64_t value_us):
        self.record(value_us)

    cpdef void merge(self, Histogram other):
        cdef Py_ssize_t i
        if other.total == 0:
            return
        for i in range(COUNTS_LEN):
            self.counts[i] += other.counts[i]
        self.total += other.total
        self.min_us = min(self.min_us, other.min_us)
        self.max_us = max(self.max_us, other.max_us)
        self.sum_us += other.sum_us
        self.sum_sq_us += other.sum_sq_us

    cpdef void reset(self):
        memset(self.counts, 0, sizeof(self.counts))
        self.total = 0
        self.min_us = UINT64_MAX
        self.max_us = 0
        self.sum_us = 0
        self.sum_sq_us = 0

    cpdef uint64_t value_at_percentile(self, double percentile):
        """Nearest-rank percentile: the smallest recorded value with at least
        `percentile`% of the samples at or below it (bucket's highest value,
        clamped to the exact min and max)."""
        cdef int64_t rank, seen = 0
        cdef Py_ssize_t i
        cdef uint64_t value
        if self.total == 0:
            return 0
        rank = <int64_t>ceil(percentile / 100.0 * <double>self.total - 1e-9)
        if rank < 1:
            rank = 1
        if rank > self.total:
            rank = self.total
        for i in range(COUNTS_LEN):
            seen += self.counts[i]
            if seen >= rank:
                value = _highest_of(i)
                if value > self.max_us:
                    value = self.max_us
                if value < self.min_us:
                    value = self.min_us
                return value
        return self.max_us

    def buckets(self):
        """[(highest value, count)] of every bucket that holds samples, lowest first: each
        bucket's highest equivalent value, clamped to the exact max (HdrHistogram's
        recorded-values iteration; exact counts for percentile spectra)."""
        cdef Py_ssize_t i
        out = []
        for i in range(COUNTS_LEN):
            if self.counts[i]:
                out.append((min(_highest_of(i), self.max_us), self.counts[i]))
        return out

    @property
    def mean_us(self):
        return <double>self.sum_us / self.total if self.total else 0.0

    @property
    def stdev_us(self):
        """Population standard deviation, exact up to the final division."""
        if self.total < 2:
            return 0.0
        sum_sq = (int(<uint64_t>(self.sum_sq_us >> 64)) << 64) | int(<uint64_t>self.sum_sq_us)
        variance_num = sum_sq * self.total - int(self.sum_us) ** 2
        return math.sqrt(max(0, variance_num)) / self.total

    def to_bytes(self):
        """Sparse, varint-encoded: header, then (index gap, count) pairs."""
        cdef unsigned char* buf = <unsigned char*>malloc(COUNTS_LEN * 20)
        cdef Py_ssize_t n = 0, i, last = -1
        if buf == NULL:
            raise MemoryError()
        try:
            for i in range(COUNTS_LEN):
                if self.counts[i]:
                    n += _put_varint(buf + n, <uint64_t>(i - last))
                    n += _put_varint(buf + n, <uint64_t>self.counts[i])
                    last = i
            header = _HEADER.pack(HISTOGRAM_MAGIC, self.total,
                                  self.min_us if self.total else 0, self.max_us, self.sum_us,
                                  <uint64_t>self.sum_sq_us, <uint64_t>(self.sum_sq_us >> 64))
            return header + PyBytes_FromStringAndSize(<char*>buf, n)
        finally:
            free(buf)

    @staticmethod
    def from_bytes(bytes blob):
        cdef Histogram hist = Histogram()
        cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(blob)
        cdef Py_ssize_t size = len(blob), pos = _HEADER.size, index = -1
        cdef int64_t total = 0
        cdef uint64_t count
        if size < _HEADER.size:
            raise ValueError("not a histogram blob")
        magic, expected, min_us, max_us, sum_us, sum_sq_lo, sum_sq_hi = _HEADER.unpack_from(blob)
        if magic != HISTOGRAM_MAGIC:
            raise ValueError("not a histogram blob")
        while pos < size:
            index += <Py_ssize_t>_get_varint(data, size, &pos)
            count = _get_varint(data, size, &pos)
            if index < 0 or index >= COUNTS_LEN:
                raise ValueError("histogram blob index out of range")
            hist.counts[index] += <int64_t>count
            total += <int64_t>count
        if total != expected:
            raise ValueError("histogram blob count mismatch")
        hist.total = total
        hist.min_us = min_us if total else UINT64_MAX
        hist.max_us = max_us
        hist.sum_us = sum_us
        hist.sum_sq_us = ((<uint128_t><uint64_t>sum_sq_hi) << 64) | <uint128_t><uint64_t>sum_sq_lo
        return hist



ERROR_NAMES = ("none", "connect", "timeout", "read", "write", "parse")


@cython.final
cdef class Counters:
    def __cinit__(self):
        self.reset()

    cpdef void merge(self, Counters other):
        cdef Py_ssize_t i
        self.responses += other.responses
        self.successes += other.successes
        self.bytes_read += other.bytes_read
        for i in range(ERR_KINDS):
            self.errors[i] += other.errors[i]
        for i in range(STATUS_CODES_LEN):
            self.status_codes[i] += other.status_codes[i]
        if other.max_wait_us > self.max_wait_us:
            self.max_wait_us = other.max_wait_us

    cpdef void reset(self):
        self.responses = 0
        self.successes = 0
        self.bytes_read = 0
        memset(self.errors, 0, sizeof(self.errors))
        memset(self.status_codes, 0, sizeof(self.status_codes))
        self.max_wait_us = 0

    @property
    def error_count(self):
        """Transport-level errors (no usable response) plus 4xx/5xx responses."""
        return self.transport_errors + (self.responses - self.successes)

    @property
    def transport_errors(self):
        cdef int64_t total = 0
        cdef Py_ssize_t i
        for i in range(1, ERR_KINDS):
            total += self.errors[i]
        return total

    def errors_by_kind(self):
        out = {ERROR_NAMES[i]: self.errors[i] for i in range(1, ERR_KINDS) if self.errors[i]}
        if self.responses - self.successes:
            out["status"] = self.responses - self.successes
        return out

    def status_counts(self):
        return {i: self.status_codes[i] for i in range(STATUS_CODES_LEN) if self.status_codes[i]}

    def to_dict(self):
        return {
            "responses": self.responses,
            "successes": self.successes,
            "bytes": self.bytes_read,
            "errors": [self.errors[i] for i in range(<int>ERR_KINDS)],
            "status": self.status_counts(),
            "max_wait_us": self.max_wait_us,
        }

    @staticmethod
    def from_dict(dict data):
        cdef Counters counters = Counters()
        cdef Py_ssize_t i
        counters.responses = data["responses"]
        counters.successes = data["successes"]
        counters.bytes_read = data["bytes"]
        for i, value in enumerate(data["errors"][:ERR_KINDS]):
            counters.errors[i] = value
        for code, value in data["status"].items():
            code = int(code)
            counters.status_codes[code if 0 <= code < STATUS_CODES_LEN else 0] += value
        counters.max_wait_us = data.get("max_wait_us", 0)
        return counters



cdef inline void _count_response(Counters c, int status, int64_t nbytes,
                                 uint64_t wait_us) noexcept:
    c.responses += 1
    if 100 <= status < 400:
        c.successes += 1
    c.status_codes[status] += 1
    c.bytes_read += nbytes
    if wait_us > c.max_wait_us:
        c.max_wait_us = wait_us


@cython.final
cdef class Recorder:
    def __cinit__(self):
        self.latency = Histogram()
        self.service = Histogram()
        self.window_latency = Histogram()
        self.window_service = Histogram()
        self.totals = Counters()
        self.window = Counters()

    cdef void record_response(self, uint64_t corrected_us, uint64_t uncorrected_us,
                              uint64_t wait_us, int status, int64_t nbytes) noexcept:
        # Only the open window counts per response; the totals are the exact
        # merge of closed windows (half the work on the hot path).
        self.window_latency.record(corrected_us)
        self.window_service.record(uncorrected_us)
        if status < 0 or status >= STATUS_CODES_LEN:
            status = 0
        _count_response(self.window, status, nbytes, wait_us)

    cdef void record_error(self, int kind) noexcept:
        self.window.errors[kind] += 1

    def take_window(self):
        """Close the open window: add it to the totals, return its counters and
        histograms, and start the next one empty."""
        self.totals.merge(self.window)
        self.latency.merge(self.window_latency)
        self.service.merge(self.window_service)
        closed = (self.window.to_dict(), self.window_latency.to_bytes(),
                  self.window_service.to_bytes())
        self.window.reset()
        self.window_latency.reset()
        self.window_service.reset()
        return closed


RECORD_FORMAT = "<QIIIHBB"        # RequestRecord in _engine.pxd, as struct sees it
RECORD_SIZE = sizeof(RequestRecord)


@cython.final
cdef class RecordBuffer:
    """Fixed-size buffer of request rows; handed off whole, once full."""

    def __cinit__(self, flush_to=None):
        self.flush_to = flush_to
        self.enabled = flush_to is not None
        self.used = 0
        self.records = NULL
        if self.enabled:
            self.records = <RequestRecord*>malloc(RECORDS_PER_BUFFER * sizeof(RequestRecord))
            if self.records == NULL:
                raise MemoryError()

    def __dealloc__(self):
        free(self.records)

    cdef void add(self, uint64_t start_us, uint64_t latency_us, uint64_t wait_us,
                  uint64_t nbytes, int status, int error, int worker) noexcept:
        cdef RequestRecord* rec
        if not self.enabled:
            return
        rec = &self.records[self.used]
        rec.start_us = start_us
        rec.latency_us = <uint32_t>min(latency_us, <uint64_t>UINT32_MAX)
        rec.wait_us = <uint32_t>min(wait_us, <uint64_t>UINT32_MAX)
        rec.bytes_read = <uint32_t>min(nbytes, <uint64_t>UINT32_MAX)
        rec.status = <uint16_t>status
        rec.error = <uint8_t>error
        rec.worker = <uint8_t>worker
        self.used += 1
        if self.used == RECORDS_PER_BUFFER:
            try:
                self.flush()
            except BaseException as exc:
                # The hot path must not raise; the sink counts its own drops.
                print_exception_once(exc)

    cpdef flush(self):
        if not self.enabled or self.used == 0:
            return
        blob = PyBytes_FromStringAndSize(<char*>self.records,
                                         self.used * sizeof(RequestRecord))
        self.used = 0
        self.flush_to(blob)


cdef bint _printed_exception = False

cdef void print_exception_once(exc) noexcept:
    global _printed_exception
    if not _printed_exception:
        _printed_exception = True
        try:
            sys.stderr.write("loadtester: internal error in a callback: %r\n" % (exc,))
        except BaseException:
            pass
