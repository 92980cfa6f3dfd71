# The built-in local target: a small, fast HTTP/1.1 server on the same loop and
# parser (llhttp in C, as the client), for demos, tests and calibration.
# Included by _engine.pyx.

cdef bytes CONTROL_PREFIX = b"/__loadtester/"

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
            302: "Found", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable"}


def build_response(int status, bytes body, bint keep_alive=True, bint head=False,
                   content_type="text/plain"):
    reason = _REASONS.get(status, "Status")
    lines = ["HTTP/1.1 %d %s" % (status, reason),
             "Server: loadtester-target",
             "Content-Type: %s" % content_type,
             "Content-Length: %d" % len(body)]
    # Said in both cases, as nginx does: HTTP/1.0 clients (ab -k) need keep-alive spelled out.
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head_bytes if head else head_bytes + body


@cython.final
cdef class LocalTargetState:
    """What the target serves and what it has served; shared by its connections."""
    cdef readonly int64_t served
    cdef readonly int64_t connections
    cdef public double delay_s
    cdef public double pause_until      # loop time; responses wait until then
    cdef bytes response_keep_alive
    cdef bytes response_close
    cdef bytes head_keep_alive
    cdef bytes head_close
    cdef dict path_counts               # count_paths: request target -> times served; else None

    def __init__(self, int status=200, int body_size=13, double delay_s=0.0,
                 bint count_paths=False):
        body = b"Hello, World!" if body_size == 13 else b"x" * body_size
        self.delay_s = delay_s
        self.pause_until = 0.0
        self.response_keep_alive = build_response(status, body, True)
        self.response_close = build_response(status, body, False)
        self.head_keep_alive = build_response(status, body, True, head=True)
        self.head_close = build_response(status, body, False, head=True)
        self.path_counts = {} if count_paths else None

    def stats(self):
        return {"served": self.served, "connections": self.connections}

    def paths(self):
        """count_paths: {request target (path and query, its first 256 bytes): times served}."""
        if self.path_counts is None:
            return None
        return {path.decode("latin-1"): count for path, count in self.path_counts.items()}


cdef enum:
    URL_KEPT_BYTES = 256        # enough for every control URL; others need only the prefix


@cython.final
cdef class LocalTargetProtocol:
    # lifetime: the server
    cdef LocalTargetState state
    cdef object loop
    # lifetime: one connection
    cdef object transport
    cdef llhttp_t parser
    # lifetime: one request
    cdef char url[URL_KEPT_BYTES]
    cdef Py_ssize_t url_length

    def __cinit__(self, LocalTargetState state, loop):
        self.state = state
        self.loop = loop

    def connection_made(self, transport):
        self.transport = transport
        LLHTTP.init(&self.parser, HTTP_REQUEST, &REQUEST_SETTINGS)
        self.parser.data = <void*>self
        self.state.connections += 1

    def connection_lost(self, exc):
        self.transport = None

    def data_received(self, bytes data):
        cdef llhttp_errno_t outcome = LLHTTP.execute(&self.parser, PyBytes_AS_STRING(data),
                                                     len(data))
        if outcome == HPE_OK or self.transport is None:
            return
        if outcome != HPE_PAUSED_UPGRADE:
            self.transport.write(build_response(400, b"bad request\n", False))
        self.transport.close()

    cdef void request_complete(self, bint keep_alive, bint head) noexcept:
        cdef double wait_s
        cdef bytes url
        try:
            if self.url_length >= len(CONTROL_PREFIX) and memcmp(
                    self.url, PyBytes_AS_STRING(CONTROL_PREFIX), len(CONTROL_PREFIX)) == 0:
                url = self.url[:self.url_length]
                self.control(url, keep_alive)
                return
            self.state.served += 1
            if self.state.path_counts is not None:      # (a test's tally, not the fast path)
                url = self.url[:self.url_length]
                self.state.path_counts[url] = self.state.path_counts.get(url, 0) + 1
            wait_s = self.state.delay_s
            if self.state.pause_until:
                wait_s = max(wait_s, self.state.pause_until - self.loop.time())
            if wait_s > 0:
                self.respond_at(monotonic_ns() + <int64_t>(wait_s * 1e9), keep_alive, head)
            else:
                self.respond(keep_alive, head)
        except BaseException as exc:
            print_exception_once(exc)

    def respond_at(self, int64_t due_ns, bint keep_alive, bint head):
        # The loop's clock is cached per iteration and its timers tick in whole
        # milliseconds, so a timer alone can fire early: check the real clock.
        cdef int64_t left_ns = due_ns - monotonic_ns()
        if left_ns > 0:
            self.loop.call_later(left_ns / 1e9, self.respond_at, due_ns, keep_alive, head)
        else:
            self.respond(keep_alive, head)

    def respond(self, bint keep_alive, bint head):
        if self.transport is None:
            return
        if head:
            self.transport.write(self.state.head_keep_alive if keep_alive else self.state.head_close)
        else:
            self.transport.write(self.state.response_keep_alive if keep_alive
                                 else self.state.response_close)
        if not keep_alive:
            self.transport.close()

    cdef control(self, bytes url, bint keep_alive):
        # /__loadtester/stats -> JSON counts; /__loadtester/pause?ms=N -> stall
        # every response for N ms from now; /__loadtester/paths -> JSON {path: count}
        # (with count_paths, else null); none is counted as served.
        import json
        from urllib.parse import urlsplit, parse_qs
        parts = urlsplit(url.decode("latin-1"))
        name = parts.path[len(CONTROL_PREFIX):]
        if name == "pause":
            ms = float(parse_qs(parts.query).get("ms", ["1000"])[0])
            self.state.pause_until = self.loop.time() + ms / 1000.0
            body = json.dumps({"paused_ms": ms}).encode()
        elif name == "stats":
            body = json.dumps(self.state.stats()).encode()
        elif name == "paths":
            body = json.dumps(self.state.paths()).encode()
        elif name == "reset":
            self.state.served = 0
            if self.state.path_counts is not None:
                self.state.path_counts.clear()
            body = json.dumps(self.state.stats()).encode()
        else:
            self.transport.write(build_response(404, b"unknown control\n", keep_alive))
            return
        self.transport.write(build_response(200, body, keep_alive,
                                            content_type="application/json"))
        if not keep_alive:
            self.transport.close()


cdef llhttp_settings_t REQUEST_SETTINGS


cdef int on_request_begin(llhttp_t* parser) noexcept:
    (<LocalTargetProtocol>parser.data).url_length = 0
    return 0


cdef int on_request_url(llhttp_t* parser, const char* at, size_t length) noexcept:
    # The URL can arrive in pieces; its first URL_KEPT_BYTES are kept.
    cdef LocalTargetProtocol protocol = <LocalTargetProtocol>parser.data
    cdef size_t room = URL_KEPT_BYTES - protocol.url_length
    if length > room:
        length = room
    memcpy(protocol.url + protocol.url_length, at, length)
    protocol.url_length += length
    return 0


cdef int on_request_complete(llhttp_t* parser) noexcept:
    (<LocalTargetProtocol>parser.data).request_complete(
        LLHTTP.should_keep_alive(parser), parser.method == HTTP_HEAD)
    return 0


LLHTTP.settings_init(&REQUEST_SETTINGS)
REQUEST_SETTINGS.on_message_begin = on_request_begin
REQUEST_SETTINGS.on_url = on_request_url
REQUEST_SETTINGS.on_message_complete = on_request_complete
