# The load-generating client: one Client per worker process, one Connection per
# TCP connection slot. Included by _engine.pyx.
#
# Hot path per request (keep-alive): data_received -> llhttp_execute (C) ->
# on_response_complete -> Recorder.record_response (C counters, no objects) ->
# send(2) of the same pre-built request bytes.
#
# Pipelining (Client(pipeline=N), as wrk's pipeline.lua): a connection writes a batch
# of k <= N requests in one send(2), from bytes built once (Origin.prepare), and
# sends the next batch when all k responses are in. Every response of a batch is
# timed from the batch's write. A response that ends inside a read with more of the
# batch still to come pauses llhttp (HPE_PAUSED), so that its bytes are known
# exactly; the last one of a batch (and every response at depth 1) does not.

cdef int64_t NS_PER_S = 1000000000
cdef int MAX_PIPELINE = 256            # spec.MAX_PIPELINE says the same
cdef int64_t NS_PER_US = 1000
cdef double RECONNECT_BACKOFF_S = 0.01
cdef double CONNECT_TIMEOUT_MAX_S = 10.0
cdef enum:
    ROWS_PER_GROUP = 0
    ROWS_PER_JOURNEY = 1
    ROWS_PER_CONNECTION = 2


cdef inline int64_t monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * NS_PER_S + ts.tv_nsec


cdef str connect_error_text(exc, str host, int port):
    """One line for a failed connect, naming where: 'connection refused 127.0.0.1:80',
    'cannot resolve example.invalid: Name or service not known', 'TLS: certificate verify
    failed: self-signed certificate (127.0.0.1:8443)'."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, asyncio.TimeoutError):
        return f"connect timed out {where}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}: {exc.strerror or exc}"
    if isinstance(exc, TlsHandshakeError):
        return f"TLS: {exc} ({where})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message} ({where})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc} ({where})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror.lower()} {where}"
    return f"{exc or type(exc).__name__} {where}"


cdef str lost_connection_text(exc, int64_t response_bytes, int pending, int batch):
    if exc is None:
        if batch > 1:
            return (f"connection closed with {pending} of {batch} pipelined requests "
                    "unanswered")
        return ("connection closed before the response was complete" if response_bytes
                else "connection closed before any response")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def now_ns():
    """CLOCK_MONOTONIC in ns: the clock every timestamp of a run is read from."""
    return monotonic_ns()


@cython.final
cdef class Origin:
    """Where some connections connect, and the targets (pre-built requests) they
    take turns sending there."""
    cdef readonly str host             # the first of `hosts`
    cdef readonly tuple hosts          # names or addresses: connections take them in turn
    cdef readonly int port
    cdef TlsOrigin tls                 # None: plain TCP
    cdef list requests                 # bytes, one per target at this origin
    cdef list heads                    # bool per target: a HEAD request
    cdef list target_ids               # index of each target in the run's list
    cdef Py_ssize_t next_turn
    # Built once for a run by prepare(depth); read per request, in C.
    cdef int depth                     # the pipeline depth they were built for; 0 = not yet
    cdef Py_ssize_t n_turns            # len(requests)
    cdef const char** request_at       # per turn: its request's bytes (held by `requests`)
    cdef Py_ssize_t* request_size
    # Turn t of a batch at position p is ring entry t + p (entries wrap around the
    # targets: n_turns + depth - 1 of them), so a batch of k from turn t is one slice.
    cdef int* ring_targets
    cdef uint8_t* ring_heads
    cdef bytes ring                    # depth > 1: the requests of the entries, in order
    cdef Py_ssize_t* ring_offsets      # depth > 1: where entry i begins in `ring` (+ the end)
    # Realistic traffic (set_traffic; NULL schedule: every request is a turn, as above).
    # A group is one target of the run (a template, a weighted target, a journey step);
    # its variants (one per data row, or just one) are requests group_first[g] onwards.
    # A turn picks a group from the schedule, then a variant of it by row.
    cdef int* schedule                 # per turn: its group (a weighted interleave, or steps)
    cdef Py_ssize_t schedule_len
    cdef bint walk                     # journeys: each connection walks the schedule itself
    cdef int row_mode                  # ROWS_PER_GROUP / _PER_JOURNEY / _PER_CONNECTION
    cdef Py_ssize_t n_rows
    cdef Py_ssize_t first_row          # where this client's rows begin, and its step through
    cdef Py_ssize_t row_stride         # them: workers (and shards) interleave the rows
    cdef Py_ssize_t next_row           # ROWS_PER_JOURNEY: the row of the next journey
    cdef Py_ssize_t n_groups
    cdef Py_ssize_t* group_first
    cdef Py_ssize_t* group_count       # 1 (the same request every time) or n_rows
    cdef Py_ssize_t* group_cursor      # ROWS_PER_GROUP: the row of the group's next request
    cdef int* variant_group            # per request: its group's id in the run (step latency)

    def __init__(self, host, int port, ssl_context=None, server_hostname=None):
        """`host`: a name or address, or a tuple of addresses (--resolve with several: the
        run's connections take them in turn)."""
        self.hosts = tuple(host) if isinstance(host, tuple) else (host,)
        if not self.hosts or not all(isinstance(h, str) and h for h in self.hosts):
            raise ValueError("host: a name or address, or a tuple of them")
        self.host = self.hosts[0]
        self.port = port
        self.tls = None if ssl_context is None else TlsOrigin(ssl_context, server_hostname or self.host)
        self.requests = []
        self.heads = []
        self.target_ids = []

    def __dealloc__(self):
        self.release()
        self.release_traffic()

    cdef void release_traffic(self) noexcept:
        free(self.schedule)
        free(self.group_first)
        free(self.group_count)
        free(self.group_cursor)
        free(self.variant_group)
        self.schedule = NULL
        self.group_first = NULL
        self.group_count = NULL
        self.group_cursor = NULL
        self.variant_group = NULL
        self.schedule_len = 0

    cdef void release(self) noexcept:
        free(self.request_at)
        free(self.request_size)
        free(self.ring_targets)
        free(self.ring_heads)
        free(self.ring_offsets)
        self.request_at = NULL
        self.request_size = NULL
        self.ring_targets = NULL
        self.ring_heads = NULL
        self.ring_offsets = NULL
        self.ring = None
        self.depth = 0

    def add_target(self, int target_id, bytes request, bint is_head):
        self.requests.append(request)
        self.heads.append(is_head)
        self.target_ids.append(target_id)
        self.release()                 # built again for the next run
        self.release_traffic()         # (set_traffic's groups no longer cover the requests)

    def set_traffic(self, list groups, list schedule, bint walk=False, int row_mode=0,
                    Py_ssize_t n_rows=1, Py_ssize_t first_row=0, Py_ssize_t row_stride=1):
        """Take turns by group, not by request. `groups`: (first request, count, group id)
        per group of this origin's requests (count 1, or n_rows: one per data row);
        `schedule`: the group (index into `groups`) of each turn, e.g. a weighted
        interleave; `walk`: each connection walks the schedule on its own (journeys);
        `row_mode`: which row a group's request comes from: 0 the group's own next row
        (shared by the origin's connections), 1 one row per journey (taken when a
        connection starts the schedule again), 2 the connection's own row. In modes 0 and
        1 rows go from `first_row` by `row_stride` (worker w of W: w, W; together the
        workers take every row in turn). add_target afterwards undoes this."""
        cdef Py_ssize_t i, g
        if not groups or not schedule or n_rows < 1 or not 0 <= row_mode <= 2:
            raise ValueError("set_traffic needs groups, a schedule, rows >= 1, row_mode 0-2")
        if first_row < 0 or row_stride < 1:
            raise ValueError("set_traffic needs first_row >= 0 and row_stride >= 1")
        for first, count, _ in groups:
            if count not in (1, n_rows) or first < 0 or first + count > len(self.requests):
                raise ValueError("a group's requests must be 1 or n_rows of this origin's")
        for g in schedule:
            if not 0 <= g < len(groups):
                raise ValueError("the schedule names a group that is not there")
        self.release_traffic()
        self.n_groups = len(groups)
        self.schedule = <int*>malloc(len(schedule) * sizeof(int))
        self.group_first = <Py_ssize_t*>malloc(self.n_groups * sizeof(Py_ssize_t))
        self.group_count = <Py_ssize_t*>malloc(self.n_groups * sizeof(Py_ssize_t))
        self.group_cursor = <Py_ssize_t*>calloc(self.n_groups, sizeof(Py_ssize_t))
        self.variant_group = <int*>malloc(max(1, len(self.requests)) * sizeof(int))
        if (self.schedule == NULL or self.group_first == NULL or self.group_count == NULL
                or self.group_cursor == NULL or self.variant_group == NULL):
            self.release_traffic()
            raise MemoryError()
        for i in range(len(schedule)):
            self.schedule[i] = schedule[i]
        for g in range(self.n_groups):
            first, count, group_id = groups[g]
            self.group_first[g] = first
            self.group_count[g] = count
            for i in range(first, first + count):
                self.variant_group[i] = group_id
        self.schedule_len = len(schedule)
        self.walk = walk
        self.row_mode = row_mode
        self.n_rows = n_rows
        self.first_row = first_row % n_rows
        self.row_stride = row_stride % n_rows
        self.rewind_rows()
        self.next_turn = 0

    cdef void rewind_rows(self) noexcept:
        cdef Py_ssize_t g
        self.next_row = self.first_row
        for g in range(self.n_groups):
            self.group_cursor[g] = self.first_row

    cdef inline Py_ssize_t row_after(self, Py_ssize_t row) noexcept:
        row += self.row_stride
        return row - self.n_rows if row >= self.n_rows else row

    cdef Py_ssize_t pick(self, Connection conn) noexcept:
        """The request (index) a connection sends next, by the schedule and rows."""
        cdef Py_ssize_t turn, group, row
        if self.walk:
            turn = conn.walk_turn
            if turn == 0 and self.row_mode == ROWS_PER_JOURNEY:
                conn.row = self.next_row
                self.next_row = self.row_after(self.next_row)
            conn.walk_turn = turn + 1 if turn + 1 < self.schedule_len else 0
        else:
            turn = self.next_turn
            self.next_turn = turn + 1 if turn + 1 < self.schedule_len else 0
        group = self.schedule[turn]
        if self.group_count[group] == 1:
            return self.group_first[group]
        if self.row_mode == ROWS_PER_GROUP:
            row = self.group_cursor[group]
            self.group_cursor[group] = self.row_after(row)
        else:
            row = conn.row
        return self.group_first[group] + row

    cdef void prepare(self, int depth) except *:
        """Lay out the request bytes for batches of up to `depth` requests."""
        cdef Py_ssize_t n = len(self.requests), entries = n + depth - 1, i
        cdef bytes request
        if self.depth == depth and self.n_turns == n:
            return
        self.release()
        self.request_at = <const char**>malloc(n * sizeof(char*))
        self.request_size = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
        self.ring_targets = <int*>malloc(entries * sizeof(int))
        self.ring_heads = <uint8_t*>malloc(entries * sizeof(uint8_t))
        if depth > 1:
            self.ring_offsets = <Py_ssize_t*>malloc((entries + 1) * sizeof(Py_ssize_t))
        if (self.request_at == NULL or self.request_size == NULL or self.ring_targets == NULL
                or self.ring_heads == NULL or (depth > 1 and self.ring_offsets == NULL)):
            self.release()
            raise MemoryError()
        for i in range(n):
            request = self.requests[i]
            self.request_at[i] = PyBytes_AS_STRING(request)
            self.request_size[i] = len(request)
        for i in range(entries):
            self.ring_targets[i] = self.target_ids[i % n]
            self.ring_heads[i] = self.heads[i % n]
        if depth > 1:
            self.ring_offsets[0] = 0
            for i in range(entries):
                self.ring_offsets[i + 1] = self.ring_offsets[i] + self.request_size[i % n]
            self.ring = b"".join([self.requests[i % n] for i in range(entries)])
        self.n_turns = n
        self.next_turn = 0
        if self.group_cursor != NULL:
            self.rewind_rows()
        self.depth = depth

    cdef object batch_bytes(self, Py_ssize_t turn, int k):
        """The bytes of a batch as one object, for the transport's write (TLS, or a full
        socket buffer); the whole ring when the batch is all of it (one target)."""
        if k == 1:
            return self.requests[turn]
        if self.ring_offsets[turn] == 0 and self.ring_offsets[turn + k] == len(self.ring):
            return self.ring
        return self.ring[self.ring_offsets[turn]:self.ring_offsets[turn + k]]


@cython.final
cdef class Connection:
    # lifetime: the whole run (the slot); the TCP connection under it may be
    # replaced many times.
    cdef Client client
    cdef Origin origin
    cdef int slot
    cdef str address                   # which of origin.hosts this slot connects to
    cdef int64_t answered              # its responses, those a success, its failed requests
    cdef int64_t succeeded             # (per address in the summary: --resolve A,B)
    cdef int64_t failed
    cdef object connect_task
    cdef object send_timer
    cdef object handshake_done         # TLS: a future _connect waits for (within its timeout)
    # lifetime: one TCP connection (bound methods are looked up once, not per request)
    cdef object transport
    cdef object write
    cdef object is_closing
    cdef int fd                        # requests (TLS: their ciphertext) are sent here; else -1
    cdef TlsStream tls                 # None: plain TCP
    cdef llhttp_t parser
    cdef bint closing
    # lifetime: one batch of requests (one request unless pipelining)
    cdef int batch                     # requests in it
    cdef int pending                   # of those, not answered yet (0: none in flight)
    cdef Py_ssize_t batch_turn         # the origin's turn (ring entry) of its first request
    cdef int64_t intended_ns
    cdef int64_t sent_ns
    cdef int64_t response_bytes        # read and not yet counted to a response
    # lifetime: the response being read (position batch - pending of the batch)
    cdef bint is_head
    cdef int target
    # realistic traffic (Origin.set_traffic)
    cdef Py_ssize_t walk_turn          # journeys: this connection's next step
    cdef Py_ssize_t row                # its data row (per journey, or its own)
    cdef int group                     # the group (target) of the request in flight
    cdef bint sent_before              # think time: waits come between requests

    def __cinit__(self, Client client, Origin origin, int slot):
        self.client = client
        self.origin = origin
        self.slot = slot
        self.address = origin.host
        self.target = origin.target_ids[0]
        self.fd = -1

    # --- connection lifecycle -------------------------------------------------

    def start(self):
        if self.client.stopping or self.connect_task is not None:
            return
        self.connect_task = self.client.loop.create_task(self._connect())

    async def _connect(self):
        cdef Client client = self.client
        started = monotonic_ns()
        try:
            await asyncio.wait_for(self._open(), client.connect_timeout_s)
        except asyncio.CancelledError:
            self.connect_task = None
            self.abort_handshake()
            return
        except (OSError, asyncio.TimeoutError, ValueError, TlsHandshakeError) as exc:
            self.connect_task = None
            self.abort_handshake()
            if not client.stopping:
                client.note_error(ERR_CONNECT, connect_error_text(exc, self.address,
                                                                  self.origin.port))
                client.on_connect_failed(self, started)
                client.loop.call_later(RECONNECT_BACKOFF_S, self.start)
            return

    async def _open(self):
        """Connect; over TLS, also wait for the handshake (so the connect timeout and the
        connect error kind cover it)."""
        handshake_done = self.handshake_done = (
            None if self.origin.tls is None else self.client.loop.create_future())
        await self.client.loop.create_connection(self._self_factory, self.address,
                                                 self.origin.port)
        if handshake_done is not None:
            await handshake_done

    def _self_factory(self):
        return self

    def connection_made(self, transport):
        self.transport = transport
        self.write = transport.write
        self.is_closing = transport.is_closing
        self.fd = -1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.fd = sock.fileno()
        self.closing = False
        LLHTTP.init(&self.parser, HTTP_RESPONSE, &RESPONSE_SETTINGS)
        self.parser.data = <void*>self
        if self.client.stopping:
            transport.abort()
            return
        if self.origin.tls is not None:
            try:
                self.tls = TlsStream(self.origin.tls)
            except (MemoryError, ValueError) as exc:
                self.fail_handshake(str(exc))
                return
            self.continue_handshake()
            return
        # The connection can be used, answered and lost before _connect resumes:
        # from here on a new connect must be possible.
        self.connect_task = None
        self.client.next_request(self)

    cdef void continue_handshake(self) noexcept:
        """Drive the TLS handshake on; once done, the first request goes out."""
        cdef int outcome = self.tls.handshake()
        failure = None if outcome >= 0 else self.tls.failure(outcome)
        try:
            self.send_tls_output()      # ClientHello, Finished, or an alert
        except BaseException as exc:
            failure = failure or f"cannot send: {exc}"
        if failure is not None:
            self.fail_handshake(failure)
            return
        if outcome == 0:
            return
        # As connection_made for plain TCP: from here on a new connect must be possible.
        self.connect_task = None
        if self.handshake_done is not None and not self.handshake_done.done():
            self.handshake_done.set_result(None)
        self.handshake_done = None
        self.client.next_request(self)

    cdef void fail_handshake(self, str reason) noexcept:
        """_connect, waiting for the handshake, counts it (a connect error) and reconnects."""
        if self.handshake_done is not None and not self.handshake_done.done():
            self.handshake_done.set_exception(TlsHandshakeError(reason))
        self.handshake_done = None
        if self.transport is not None:
            self.closing = True
            self.transport.abort()

    cdef void abort_handshake(self) noexcept:
        """_connect gave up (timeout, stop) while the TLS handshake was still going."""
        self.handshake_done = None
        if self.tls is not None and not self.tls.handshaken and self.transport is not None:
            self.closing = True
            self.transport.abort()

    cdef void send_tls_output(self) except *:
        """Send the ciphertext OpenSSL produced, as send() sends plain requests."""
        cdef int n
        cdef Py_ssize_t sent
        while self.tls.outgoing_size() > 0:
            n = self.tls.take_outgoing()
            if n <= 0:
                return
            sent = self.send_now(TLS_CIPHER, n)
            if sent < n:
                self.write(PyBytes_FromStringAndSize(TLS_CIPHER + sent, n - sent))

    cdef Py_ssize_t send_now(self, const char* at, Py_ssize_t size) except -1:
        """wrk's way: one send(2) of the bytes at `at`, no copy, while the transport's write
        buffer is empty (so bytes stay in order). Returns how many went out. Fewer than `size`:
        the socket buffer is full, and from here on this connection writes through its
        transport (the caller hands it the rest)."""
        cdef ssize_t sent
        # The transport may have closed the socket on an error of its own (its
        # connection_lost is still to come): then the fd may be reused.
        if self.fd < 0 or self.is_closing():
            return 0
        sent = send(self.fd, at, size, MSG_NOSIGNAL)
        if sent == size:
            return size
        if sent < 0 and errno != EAGAIN and errno != EINTR:   # (EWOULDBLOCK == EAGAIN)
            raise OSError(errno, os.strerror(errno))
        self.fd = -1
        return sent if sent > 0 else 0

    def connection_lost(self, exc):
        cdef TlsStream tls = self.tls
        self.transport = None
        self.write = None
        self.fd = -1
        if tls is not None:
            self.tls = None
            tls.release()               # its session is kept for the next connection
            if not tls.handshaken:
                # _connect is waiting for the handshake: it counts this and reconnects.
                if exc is None:
                    reason = "the server closed the connection during the handshake"
                elif isinstance(exc, OSError) and exc.strerror:
                    reason = f"{exc.strerror.lower()} during the handshake"
                else:
                    reason = f"{exc} during the handshake"
                self.fail_handshake(reason)
                return
        self.cancel_scheduled_send()
        if self.pending and self.response_bytes:
            # A body that ends with the connection (no length, no chunks) is
            # complete now; a response cut short stays in flight: a read error.
            LLHTTP.finish(&self.parser)
        if self.pending:
            # Every request of the batch still unanswered is lost, each one an error.
            kind = ERR_WRITE if isinstance(exc, BrokenPipeError) else ERR_READ
            self.client.note_error(kind, lost_connection_text(exc, self.response_bytes,
                                                              self.pending, self.batch))
            self.client.on_request_failed(self, kind)
        if not self.client.stopping:
            self.start()

    def eof_received(self):
        return False

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass

    cdef void cancel_scheduled_send(self) noexcept:
        """A request waiting for its time on the timetable will not go out on this
        connection: it is not sent, so it is given back to the count (-n)."""
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None
            self.client.scheduled -= 1
            self.client.issued -= 1

    cdef void close(self) noexcept:
        self.cancel_scheduled_send()
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        if self.pending:
            # Cut off by the end of the run: neither responses nor errors (as wrk).
            self.client.in_flight -= self.pending
            self.pending = 0
        if self.transport is not None:
            self.closing = True
            self.transport.abort()

    # --- one request (or one pipelined batch) -------------------------------------

    cdef void send(self, int64_t intended_ns, int k) noexcept:
        """Write the origin's next k requests (k > 1: a pipelined batch) in one go."""
        self.send_timer = None
        if self.transport is None or self.closing:
            return
        cdef Origin origin = self.origin
        cdef Py_ssize_t turn = origin.next_turn
        cdef Py_ssize_t next_turn = turn + k
        cdef const char* at
        cdef Py_ssize_t size
        cdef ssize_t sent
        if origin.schedule != NULL:
            # Realistic traffic (one request at a time): the schedule and rows pick it.
            turn = origin.pick(self)
            self.group = origin.variant_group[turn]
        else:
            if next_turn >= origin.n_turns:
                # (no division on the plain path: there k == 1 and this is 0)
                next_turn -= origin.n_turns
                if next_turn >= origin.n_turns:
                    next_turn %= origin.n_turns
            origin.next_turn = next_turn
        self.sent_before = True
        self.intended_ns = intended_ns
        self.sent_ns = monotonic_ns()
        self.batch = k
        self.pending = k
        self.batch_turn = turn
        self.response_bytes = 0
        self.client.in_flight += k
        self.target = origin.ring_targets[turn]
        self.is_head = origin.ring_heads[turn]
        if k == 1:
            at = origin.request_at[turn]
            size = origin.request_size[turn]
        else:
            at = PyBytes_AS_STRING(origin.ring) + origin.ring_offsets[turn]
            size = origin.ring_offsets[turn + k] - origin.ring_offsets[turn]
        try:
            if self.tls is not None:
                if self.tls.encrypt(at, size) < 0:
                    raise ConnectionError("TLS: " + self.tls.failure(-1))
                self.send_tls_output()
            else:
                sent = self.send_now(at, size)
                if sent < size:
                    self.write(origin.batch_bytes(turn, k)[sent:])
        except BaseException as exc:
            self.client.note_error(ERR_WRITE, f"cannot send the request: {exc}")
            self.client.on_request_failed(self, ERR_WRITE)
            self.transport.abort()

    def send_when_due(self, int64_t intended_ns):
        self.send_timer = None
        self.client.scheduled -= 1
        if self.transport is None or self.closing:
            self.client.issued -= 1          # not sent: the count (-n) gets it back
            return
        self.send(intended_ns, 1)

    def send_after_think(self, int64_t due_ns):
        """The think time is up at `due_ns` (the loop's timers tick in whole ms and can
        fire early: the real clock decides); the latency counts from the actual send."""
        cdef int64_t left_ns = due_ns - monotonic_ns()
        if left_ns > 0 and self.transport is not None and not self.closing:
            self.send_timer = self.client.loop.call_later(left_ns / 1e9, self.send_after_think,
                                                          due_ns)
            return
        self.send_when_due(INT64_MAX)      # (as the intended time: none, the send counts)

    def data_received(self, bytes data):
        if self.tls is not None:
            self.tls_received(PyBytes_AS_STRING(data), len(data))
        else:
            self.received(PyBytes_AS_STRING(data), len(data))

    cdef void tls_received(self, const char* at, Py_ssize_t size) noexcept:
        """Ciphertext: decrypt what is complete and parse it, record by record."""
        cdef TlsStream tls = self.tls
        cdef int n
        if tls.feed(at, size) < 0:
            n = -2
        else:
            if not tls.handshaken:
                self.continue_handshake()
                if not tls.handshaken or self.transport is None or self.closing:
                    return
            n = tls.decrypt()
            while n > 0:
                self.received(TLS_PLAIN, n)
                if self.transport is None or self.closing:
                    return
                n = tls.decrypt()
            if n == 0 and tls.outgoing_size() == 0:
                return
        if n == -1:
            return                      # close_notify: the connection's end counts what is lost
        if n == -2:
            if self.pending and not self.closing:
                self.client.note_error(ERR_READ, "TLS: " + tls.failure(-1))
                self.client.on_request_failed(self, ERR_READ)
            self.closing = True
            self.transport.abort()
            return
        try:
            self.send_tls_output()      # what OpenSSL answers by itself (a key update)
        except BaseException as exc:
            self.client.note_error(ERR_WRITE, f"cannot send: {exc}")
            self.client.on_request_failed(self, ERR_WRITE)
            self.transport.abort()

    cdef void received(self, const char* at, Py_ssize_t left) noexcept:
        """Response bytes (plaintext) as read: parse, count and time what completes."""
        cdef llhttp_errno_t outcome
        cdef Py_ssize_t used
        self.response_bytes += left
        outcome = LLHTTP.execute(&self.parser, at, left)
        while outcome == HPE_PAUSED:
            # A response of a pipelined batch ended at error_pos, more of the batch are
            # to come: what was read up to there is its bytes.
            used = self.parser.error_pos - at
            at += used
            left -= used
            self.complete(self.parser.status_code, self.response_bytes - left)
            if self.transport is None or self.closing:
                return                  # the batch's unanswered requests count when it is lost
            LLHTTP_RESUME(&self.parser)
            outcome = LLHTTP.execute(&self.parser, at, left)
        if outcome == HPE_OK or outcome == HPE_PAUSED_UPGRADE:
            # (after a 101 the connection is already being closed by complete())
            return
        if self.pending and not self.closing:
            self.client.note_error(ERR_PARSE, "not an HTTP/1 response: " + (
                self.parser.reason.decode("utf-8", "replace") if self.parser.reason != NULL
                else "parse error"))
            self.client.on_request_failed(self, ERR_PARSE)
        if self.transport is not None:
            self.transport.abort()

    cdef void complete(self, int status, int64_t nbytes) noexcept:
        """The response at the batch's current position is in: `nbytes` of what was read."""
        cdef int64_t now
        cdef Py_ssize_t entry
        cdef Client client = self.client
        if not self.pending:
            return
        now = monotonic_ns()
        self.response_bytes -= nbytes
        client.in_flight -= 1
        client.record_response(self, now, status, nbytes)
        self.pending -= 1
        if self.pending:
            entry = self.batch_turn + self.batch - self.pending
            self.target = self.origin.ring_targets[entry]
            self.is_head = self.origin.ring_heads[entry]
        if self.transport is None:
            client.stop_if_spent()      # else connection_lost reconnects
            return
        if status == 101 or not LLHTTP.should_keep_alive(&self.parser):
            # (what follows a 101 Switching Protocols is not HTTP/1)
            self.closing = True
            self.transport.close()      # reconnects from connection_lost
            return
        if self.pending == 0:
            client.next_request(self)

    cdef void expire(self) noexcept:
        """The request outlived --timeout: count it, drop the connection."""
        self.client.note_error(ERR_TIMEOUT, f"no complete response within "
                                            f"{self.client.timeout_ns / 1e9:g}s")
        self.client.on_request_failed(self, ERR_TIMEOUT)
        if self.transport is not None:
            self.closing = True
            self.transport.abort()


cdef llhttp_settings_t RESPONSE_SETTINGS


cdef int on_response_headers(llhttp_t* parser) noexcept:
    # 1 tells llhttp the response has no body: a HEAD response ends here.
    return 1 if (<Connection>parser.data).is_head else 0


cdef int on_response_complete(llhttp_t* parser) noexcept:
    cdef int status = parser.status_code
    cdef Connection conn = <Connection>parser.data
    if 100 <= status < 200 and status != 101:
        # Interim response (100 Continue, 103 Early Hints): the final one follows.
        return 0
    if conn.pending > 1 and conn.transport is not None:
        # More of a pipelined batch follow (in this read, or the next): stop here, so
        # that data_received knows where this response's bytes end.
        return HPE_PAUSED
    conn.complete(status, conn.response_bytes)
    return 0


LLHTTP.settings_init(&RESPONSE_SETTINGS)
RESPONSE_SETTINGS.on_headers_complete = on_response_headers
RESPONSE_SETTINGS.on_message_complete = on_response_complete


# llhttp_resume, from the same library as the rest of the API (llhttp.pyx).
ctypedef void (*llhttp_resume_fn)(llhttp_t*) noexcept
cdef llhttp_resume_fn LLHTTP_RESUME


cdef int pause_after_each_for_check(llhttp_t* parser) noexcept:
    return HPE_PAUSED


cdef void bind_llhttp_resume() except *:
    global LLHTTP_RESUME
    import httptools.parser.parser as parser_module
    cdef void* library = dlopen(os.fsencode(parser_module.__file__), RTLD_NOW | RTLD_NOLOAD)
    if library == NULL:
        raise ImportError(f"cannot open httptools' parser module: {dlerror().decode()}")
    LLHTTP_RESUME = <llhttp_resume_fn>llhttp_symbol(library, b"llhttp_resume")
    # Two pipelined responses, paused after each: the pause must land where the first
    # one ends, and resuming must read the second (what pipelining relies on).
    cdef llhttp_settings_t settings
    cdef llhttp_t parser
    cdef bytes first = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    cdef bytes both = first + b"HTTP/1.1 204 No Content\r\n\r\n"
    cdef const char* at = both
    LLHTTP.settings_init(&settings)
    settings.on_message_complete = pause_after_each_for_check
    LLHTTP.init(&parser, HTTP_RESPONSE, &settings)
    if (LLHTTP.execute(&parser, at, len(both)) != HPE_PAUSED
            or parser.error_pos - at != len(first) or parser.status_code != 200):
        raise ImportError("httptools' llhttp does not pause as loadtester expects; "
                          "loadtester needs httptools>=0.7.1,<0.10")
    LLHTTP_RESUME(&parser)
    if (LLHTTP.execute(&parser, parser.error_pos, len(both) - len(first)) != HPE_PAUSED
            or parser.error_pos - at != len(both) or parser.status_code != 204):
        raise ImportError("httptools' llhttp does not resume as loadtester expects; "
                          "loadtester needs httptools>=0.7.1,<0.10")


bind_llhttp_resume()


@cython.final
cdef class Client:
    """One worker's share of a run: its connections, timetable and recorder."""
    # lifetime: the run (fixed at construction)
    cdef object loop
    cdef list origins
    cdef Py_ssize_t n_targets
    cdef int64_t* target_counts        # per target: responses, successes, errors
    cdef int worker_index
    cdef int n_connections
    cdef readonly int pipeline         # requests per batch on a connection (1: no pipelining)
    cdef int64_t max_requests          # 0 = unbounded (run by duration)
    cdef int64_t duration_ns           # 0 = unbounded (run by count)
    cdef int64_t deadline_ns           # start + duration; 0 = none
    cdef int64_t timeout_ns
    cdef double connect_timeout_s
    cdef double rate_per_s             # this worker's share; 0 = closed loop
    cdef double ramp_up_s
    cdef double phase_s
    cdef readonly Recorder recorder
    cdef RecordBuffer records
    cdef object window_sink
    cdef list connections
    # lifetime: the run (changing)
    cdef readonly int64_t start_ns
    cdef readonly int64_t end_ns
    cdef readonly int64_t issued
    cdef int64_t schedule_index
    cdef int in_flight
    cdef int scheduled                 # requests counted as issued, waiting for their time
    cdef readonly bint stopping
    cdef readonly str stop_reason
    cdef int64_t window_index
    cdef double window_due_loop_time
    cdef uint64_t loop_lag_max_us
    cdef object done
    cdef list start_timers             # ramp-up and deadline: one each, armed once
    cdef object sweep_timer
    cdef object window_timer
    cdef dict first_errors             # error kind name -> the first message of that kind
    # realistic traffic
    cdef int64_t think_min_ns          # closed loop: a wait before each request of a
    cdef int64_t think_max_ns          # connection but its first, uniform in [min, max]
    cdef uint64_t random_state         # xorshift64*, for think times (seeded: repeatable)
    cdef list group_latency            # None, or per group (target): a corrected-latency Histogram

    def __init__(self, *, list origins, int connections=1, int64_t max_requests=0,
                 double duration_s=0.0, double timeout_s=10.0, double rate_per_s=0.0,
                 double ramp_up_s=0.0, double phase_s=0.0, int worker_index=0,
                 record_sink=None, window_sink=None, int pipeline=1,
                 double think_min_s=0.0, double think_max_s=0.0, uint64_t seed=0,
                 int group_latency=0, Py_ssize_t first_connection=0):
        """`origins`: Origin objects with their targets; connection i connects to
        origins[i % len(origins)] and sends that origin's targets in turn.
        `pipeline`: requests written at once on a connection (closed loop only).
        `think_min_s`..`think_max_s`: closed loop, a uniform wait before each request of a
        connection but its first (seeded by `seed`); `group_latency` N: keep a latency
        histogram for each of N groups (Origin.set_traffic); `first_connection`: the run's
        index of this client's first connection (rows per connection)."""
        if connections < 1:
            raise ValueError("connections must be at least 1")
        if not origins or any(not (<Origin>o).requests for o in origins):
            raise ValueError("every origin needs at least one target")
        if not 1 <= pipeline <= MAX_PIPELINE:
            raise ValueError(f"pipeline must be from 1 to {MAX_PIPELINE}")
        if pipeline > 1 and rate_per_s > 0:
            raise ValueError("pipelining is closed loop only: no rate with pipeline > 1")
        if pipeline > 1 and any((<Origin>o).schedule != NULL for o in origins):
            raise ValueError("pipelining sends requests in order: not with set_traffic")
        if think_max_s < think_min_s or think_min_s < 0:
            raise ValueError("think time: 0 <= min <= max")
        if think_max_s > 0 and rate_per_s > 0:
            raise ValueError("think time is closed loop only")
        self.think_min_ns = <int64_t>(think_min_s * NS_PER_S)
        self.think_max_ns = <int64_t>(think_max_s * NS_PER_S)
        self.random_state = seed * <uint64_t>0x9E3779B97F4A7C15ULL + <uint64_t>worker_index + 1
        self.group_latency = [Histogram() for _ in range(group_latency)] if group_latency else None
        for o in origins:
            (<Origin>o).prepare(pipeline)
        self.pipeline = pipeline
        self.origins = origins
        self.n_targets = 1 + max(max((<Origin>o).target_ids) for o in origins)
        self.target_counts = <int64_t*>calloc(self.n_targets * 3, sizeof(int64_t))
        if self.target_counts == NULL:
            raise MemoryError()
        self.n_connections = connections
        self.max_requests = max_requests
        self.duration_ns = <int64_t>(duration_s * NS_PER_S)
        self.timeout_ns = <int64_t>(timeout_s * NS_PER_S)
        self.connect_timeout_s = min(timeout_s, CONNECT_TIMEOUT_MAX_S)
        self.rate_per_s = rate_per_s
        self.ramp_up_s = ramp_up_s
        self.phase_s = phase_s
        self.worker_index = worker_index
        self.recorder = Recorder()
        self.records = RecordBuffer(record_sink)
        self.window_sink = window_sink
        self.connections = [Connection(self, origins[i % len(origins)], i)
                            for i in range(connections)]
        cdef Connection conn
        for conn in self.connections:
            if conn.origin.row_mode == ROWS_PER_CONNECTION:
                conn.row = (first_connection + conn.slot) % conn.origin.n_rows
            # the run's connections to an origin take its addresses in turn, across workers
            conn.address = conn.origin.hosts[(first_connection + conn.slot) // len(origins)
                                             % len(conn.origin.hosts)]
        self.start_timers = []
        self.stop_reason = ""
        self.first_errors = {}

    def __dealloc__(self):
        free(self.target_counts)

    def target_stats(self):
        """Per target: [responses, successes, transport errors]."""
        return [[self.target_counts[3 * i + k] for k in range(3)] for i in range(self.n_targets)]

    async def run(self, int64_t start_ns=0):
        """Run until the duration or count is reached, or stop() is called.
        `start_ns` (CLOCK_MONOTONIC) lets several workers share one time base."""
        cdef Connection conn
        cdef int i
        cdef double delay_s
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        now = monotonic_ns()
        if start_ns < now:
            start_ns = now
        # The loop's timers tick in whole ms and can fire early; a request must not
        # begin before the time base (its offset would go negative).
        while now < start_ns:
            await asyncio.sleep((start_ns - now) / 1e9)
            now = monotonic_ns()
        self.start_ns = start_ns
        if self.stopping:           # stopped before it began (a signal during start-up)
            self.end_ns = start_ns
            return self.summary()
        self.window_due_loop_time = self.loop.time() + 1.0
        self.window_timer = self.loop.call_at(self.window_due_loop_time, self._close_window)
        self.sweep_timer = self.loop.call_later(self._sweep_interval_s(), self._sweep)
        if self.duration_ns:
            self.deadline_ns = start_ns + self.duration_ns
            self.start_timers.append(
                self.loop.call_later(self.duration_ns / 1e9, self.stop, "duration"))
        for i, conn in enumerate(self.connections):
            if self.ramp_up_s > 0 and self.rate_per_s <= 0 and i > 0:
                delay_s = self.ramp_up_s * i / self.n_connections
                self.start_timers.append(self.loop.call_later(delay_s, conn.start))
            else:
                conn.start()
        await self.done
        return self.summary()

    def stop(self, reason="stopped"):
        cdef Connection conn
        if self.stopping:
            return
        self.stopping = True
        self.stop_reason = reason
        self.end_ns = monotonic_ns()
        for timer in self.start_timers + [self.sweep_timer, self.window_timer]:
            if timer is not None:
                timer.cancel()
        for conn in self.connections:
            conn.close()
        self._emit_window(final=True)
        self.records.flush()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def summary(self):
        return {
            "worker": self.worker_index,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "issued": self.issued,
            "stop_reason": self.stop_reason,
            "counters": self.recorder.totals,
            "latency": self.recorder.latency,
            "service": self.recorder.service,
            "loop_lag_max_us": self.loop_lag_max_us,
            # per target [responses, successes, errors], int64, as one blob: 100,000 data
            # variants are 2.4 MB here, not 100,000 lists
            "targets": PyBytes_FromStringAndSize(<char*>self.target_counts,
                                                 self.n_targets * 3 * sizeof(int64_t)),
            "error_messages": dict(self.first_errors),
            "group_latency": ([(<Histogram>h).to_bytes() for h in self.group_latency]
                              if self.group_latency is not None else None),
            "addresses": self.address_counts(),
        }

    def address_counts(self):
        """{address: [connections, responses, successes, failed requests]} of the origins
        with several addresses (--resolve HOST:PORT:A,B), None when there are none."""
        cdef Connection conn
        counts = None
        for conn in self.connections:
            if len(conn.origin.hosts) < 2:
                continue
            if counts is None:
                counts = {}
            entry = counts.setdefault(conn.address, [0, 0, 0, 0])
            entry[0] += 1
            entry[1] += conn.answered
            entry[2] += conn.succeeded
            entry[3] += conn.failed
        return counts

    cdef void note_error(self, int kind, str message) noexcept:
        """Keep the first message of each error kind, for the report (as hey prints its
        first x509 error): only the first error of a kind costs anything."""
        name = ERROR_NAMES[kind]
        if name not in self.first_errors:
            self.first_errors[name] = message

    # --- scheduling -----------------------------------------------------------

    cdef bint budget_left(self) noexcept:
        return self.max_requests == 0 or self.issued < self.max_requests

    cdef void stop_if_spent(self) noexcept:
        # Requests still waiting for their time on the timetable are part of the count:
        # the run is spent only once they too have been answered.
        if (not self.budget_left() and self.in_flight == 0 and self.scheduled == 0
                and not self.stopping):
            self.stop("count")

    cdef void next_request(self, Connection conn) noexcept:
        cdef int64_t intended_ns, now, delay_ms
        cdef int64_t k = self.pipeline
        if self.stopping or conn.transport is None or conn.closing:
            return
        if not self.budget_left():
            self.stop_if_spent()
            return
        now = monotonic_ns()
        if self.deadline_ns and now >= self.deadline_ns:
            # The loop was too busy for the duration timer to fire on time (thousands of
            # connections): stop at the deadline, not when the timer gets its turn.
            self.stop("duration")
            return
        if self.max_requests and self.max_requests - self.issued < k:
            k = self.max_requests - self.issued         # the last batch of a count (-n)
        self.issued += k
        if self.rate_per_s <= 0:
            if self.think_max_ns and conn.sent_before:
                self.think_then_send(conn)
            else:
                conn.send(now, <int>k)
            return
        if conn.walk_turn != 0:
            # Open loop with journeys: the timetable starts journeys; a journey's next step
            # goes out as soon as the last one is answered (as its user would), its latency
            # counted from that send.
            conn.send(INT64_MAX, 1)
            return
        intended_ns = self.start_ns + <int64_t>(
            (self.phase_s + intended_offset_s(self.schedule_index, self.rate_per_s,
                                              self.ramp_up_s)) * NS_PER_S)
        self.schedule_index += 1
        now = monotonic_ns()
        # libuv timers tick in whole milliseconds: fire at or just before the
        # intended time and send then; latency is measured from the intended time.
        delay_ms = (intended_ns - now) // 1000000
        if delay_ms < 1:
            conn.send(intended_ns, 1)
        else:
            try:
                conn.send_timer = self.loop.call_later(delay_ms / 1000.0, conn.send_when_due,
                                                       intended_ns)
                self.scheduled += 1
            except BaseException as exc:
                print_exception_once(exc)

    cdef void think_then_send(self, Connection conn) noexcept:
        """Closed loop with think time: the connection's next request goes out after a
        uniform wait (as a user between steps). Its latency counts from when it is sent."""
        cdef uint64_t x = self.random_state
        cdef int64_t wait_ns = self.think_min_ns
        x ^= x >> 12
        x ^= x << 25
        x ^= x >> 27
        self.random_state = x
        if self.think_max_ns > self.think_min_ns:
            wait_ns += <int64_t>((x * <uint64_t>0x2545F4914F6CDD1D)
                                 % <uint64_t>(self.think_max_ns - self.think_min_ns + 1))
        try:
            conn.send_timer = self.loop.call_later(wait_ns / 1e9, conn.send_after_think,
                                                   monotonic_ns() + wait_ns)
            self.scheduled += 1
        except BaseException as exc:
            print_exception_once(exc)

    # --- recording ------------------------------------------------------------

    cdef void record_response(self, Connection conn, int64_t now, int status,
                              int64_t nbytes) noexcept:
        cdef int64_t begin_ns = conn.intended_ns if conn.intended_ns < conn.sent_ns else conn.sent_ns
        cdef uint64_t corrected_us = <uint64_t>((now - begin_ns) // NS_PER_US)
        cdef uint64_t service_us = <uint64_t>((now - conn.sent_ns) // NS_PER_US)
        cdef uint64_t wait_us = corrected_us - service_us if corrected_us > service_us else 0
        self.recorder.record_response(corrected_us, service_us, wait_us, status, nbytes)
        if self.group_latency is not None:
            (<Histogram>self.group_latency[conn.group]).record(corrected_us)
        self.target_counts[3 * conn.target] += 1
        conn.answered += 1
        if 100 <= status < 400:
            self.target_counts[3 * conn.target + 1] += 1
            conn.succeeded += 1
        elif "status" not in self.first_errors:
            self.first_errors["status"] = f"HTTP {status}"
        self.records.add(<uint64_t>((begin_ns - self.start_ns) // NS_PER_US), corrected_us,
                         wait_us, <uint64_t>nbytes, status, ERR_NONE,
                         self.worker_index)

    cdef void on_request_failed(self, Connection conn, int kind) noexcept:
        """Every request of the connection's batch still unanswered failed with `kind`."""
        cdef int64_t now = monotonic_ns()
        cdef int64_t begin_ns = conn.intended_ns if conn.intended_ns < conn.sent_ns else conn.sent_ns
        cdef int lost = conn.pending, i, target
        cdef Py_ssize_t first = conn.batch_turn + conn.batch - lost
        if not lost:
            return
        conn.pending = 0
        conn.failed += lost
        self.in_flight -= lost
        for i in range(lost):
            target = conn.origin.ring_targets[first + i]
            self.recorder.record_error(kind)
            self.target_counts[3 * target + 2] += 1
            self.records.add(<uint64_t>((begin_ns - self.start_ns) // NS_PER_US),
                             <uint64_t>((now - begin_ns) // NS_PER_US), 0,
                             <uint64_t>(conn.response_bytes if i == 0 else 0), 0, kind,
                             self.worker_index)
        self.stop_if_spent()

    cdef void on_connect_failed(self, Connection conn, int64_t started_ns) noexcept:
        # A refused connection is one failed attempt; with -n it uses up one
        # request, or a run against a dead target would never end.
        cdef int64_t now = monotonic_ns()
        self.recorder.record_error(ERR_CONNECT)
        self.target_counts[3 * conn.target + 2] += 1
        conn.failed += 1
        self.records.add(<uint64_t>((started_ns - self.start_ns) // NS_PER_US),
                         <uint64_t>((now - started_ns) // NS_PER_US), 0, 0, 0, ERR_CONNECT,
                         self.worker_index)
        if self.max_requests:
            self.issued += 1
            self.stop_if_spent()

    # --- periodic work (not per request) --------------------------------------

    def _sweep_interval_s(self):
        return min(0.1, max(0.005, self.timeout_ns / 1e9 / 10))

    def _sweep(self):
        cdef Connection conn
        cdef int64_t now = monotonic_ns()
        for conn in self.connections:
            if conn.pending and now - conn.sent_ns > self.timeout_ns:
                conn.expire()
        if not self.stopping:
            self.sweep_timer = self.loop.call_later(self._sweep_interval_s(), self._sweep)

    def _close_window(self):
        lag_s = self.loop.time() - self.window_due_loop_time
        lag_us = <uint64_t>(max(0.0, lag_s) * 1e6)
        if lag_us > self.loop_lag_max_us:
            self.loop_lag_max_us = lag_us
        # The rows of a closed second go out with its window: a worker that dies later
        # leaves stored rows and windows that agree.
        self.records.flush()
        self._emit_window(final=False, loop_lag_us=lag_us)
        self.window_due_loop_time += 1.0
        if not self.stopping:
            self.window_timer = self.loop.call_at(self.window_due_loop_time, self._close_window)

    def _emit_window(self, bint final, loop_lag_us=0):
        counters, latency_blob, service_blob = self.recorder.take_window()
        index = self.window_index
        self.window_index += 1
        if self.window_sink is None:
            return
        if final and counters["responses"] == 0 and not any(counters["errors"]):
            return
        try:
            self.window_sink({
                "worker": self.worker_index,
                "second": index,
                "counters": counters,
                "latency": latency_blob,
                "service": service_blob,
                "loop_lag_us": loop_lag_us,
                "in_flight": self.in_flight,
                "partial": final,
            })
        except BaseException as exc:
            print_exception_once(exc)
