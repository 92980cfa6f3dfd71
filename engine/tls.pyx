# TLS for the client, OpenSSL called in C (wrk's way). Included by _engine.pyx.
#
# asyncio's (and uvloop's) TLS layer costs Python calls, objects and a 256 KiB read
# buffer per read; wrk calls SSL_read/SSL_write. Here each TLS connection has its own
# SSL over two memory BIOs: the ciphertext uvloop reads is written into one, SSL_read
# decrypts into a buffer shared by the worker (reads are handled one at a time) and
# llhttp parses from there; a request is SSL_write'n and the ciphertext taken from the
# other BIO and sent with send(2), as plain requests are. The TCP connection stays
# uvloop's (connect, errors, connection_lost), so both paths share it.
#
# The functions are looked up in the libssl/libcrypto that Python's ssl module is
# linked with (dlsym, as llhttp.pyx does for httptools): no headers, no link step, and
# the SSL_CTX of Python's SSLContext is used as is (verify mode, CA, ciphers, options).
# An import-time check reads a known context's verify mode and options through that
# pointer and refuses a Python whose SSLContext layout differs.
#
# SSLKEYLOGFILE (as Python's default context honours it): the engine writes the key log
# itself, one write(2) per line on a file opened once per process with O_APPEND.
#
# Session resumption: when a connection ends, its session (if resumable) becomes its
# origin's; the next connection to that origin offers it (abbreviated handshake), which
# is what a new-connection-per-request run spends most of its time on.

cdef OpenSslApi OPENSSL

cdef enum:
    SSL_ERROR_SSL = 1
    SSL_ERROR_WANT_READ = 2
    SSL_ERROR_WANT_WRITE = 3
    SSL_ERROR_SYSCALL = 5
    SSL_ERROR_ZERO_RETURN = 6
    SSL_CTRL_MODE = 33
    SSL_CTRL_SET_TLSEXT_HOSTNAME = 55
    SSL_CTRL_CLEAR_MODE = 78
    TLSEXT_NAMETYPE_host_name = 0
    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER = 0x2
    SSL_MODE_RELEASE_BUFFERS = 0x10
    SSL_SENT_SHUTDOWN = 1
    SSL_RECEIVED_SHUTDOWN = 2
    SSL_VERIFY_PEER = 0x1
    SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x2
    X509_V_OK = 0
    TLS_RECORD_MAX = 16384             # plaintext of one TLS record
    TLS_CIPHER_CHUNK = 65536           # ciphertext taken from the BIO per send(2)

# One worker handles one read or one write at a time: these are shared by its connections.
cdef char TLS_PLAIN[TLS_RECORD_MAX]
cdef char TLS_CIPHER[TLS_CIPHER_CHUNK]


cdef struct PySSLContextHead:
    # CPython's PySSLContext (Modules/_ssl.c) begins with its SSL_CTX pointer.
    Py_ssize_t ob_refcnt
    void* ob_type
    SSL_CTX* ctx


cdef int KEYLOG_FD = -1


cdef void write_keylog_line(const SSL* ssl, const char* line) noexcept nogil:
    cdef char buffer[1024]
    cdef size_t size = strlen(line)
    if size >= sizeof(buffer):
        return
    memcpy(buffer, line, size)
    buffer[size] = 10                  # a line each, whole: workers append to the same file
    write(KEYLOG_FD, buffer, size + 1)


cdef void use_keylog(SSL_CTX* ctx) except *:
    global KEYLOG_FD
    path = os.environ.get("SSLKEYLOGFILE")
    if not path or sys.flags.ignore_environment:
        return
    if KEYLOG_FD < 0:
        KEYLOG_FD = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    OPENSSL.SSL_CTX_set_keylog_callback(ctx, write_keylog_line)


class TlsHandshakeError(Exception):
    """A TLS handshake that failed: the one-line reason (certificate verify failed:
    ..., wrong version number, connection reset during the handshake)."""


@cython.final
cdef class TlsOrigin:

    def __cinit__(self, context, str host):
        if TLS_UNAVAILABLE:
            raise RuntimeError(f"HTTPS is not available: {TLS_UNAVAILABLE}")
        if getattr(context, "keylog_filename", None) or getattr(context, "_msg_callback", None):
            # Python's callbacks for these expect its own socket object on the SSL.
            raise ValueError("the engine's TLS does not support keylog_filename or "
                             "_msg_callback on the SSLContext")
        self.context = context
        self.ctx = (<PySSLContextHead*><PyObject*>context).ctx
        use_keylog(self.ctx)
        check_ip = is_ip_address(host)
        # As Python's ssl: SNI only for a name, the certificate checked for the name or IP.
        self.server_name = None if check_ip else host.encode("idna")
        self.check_ip = check_ip
        self.check_name = None
        if context.check_hostname:
            self.check_name = host.encode("ascii") if check_ip else host.encode("idna")
        self.session = NULL

    def __dealloc__(self):
        if self.session != NULL:
            OPENSSL.SSL_SESSION_free(self.session)

    cdef void keep_session(self, SSL* ssl) noexcept:
        cdef SSL_SESSION* session = OPENSSL.SSL_get_session(ssl)
        if session == NULL or session == self.session or not OPENSSL.SSL_SESSION_is_resumable(
                session):
            return
        if self.session != NULL:
            OPENSSL.SSL_SESSION_free(self.session)
        self.session = OPENSSL.SSL_get1_session(ssl)


cdef bint is_ip_address(str host):
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return True
    except OSError:
        return False


@cython.final
cdef class TlsStream:

    def __cinit__(self, TlsOrigin origin):
        cdef X509_VERIFY_PARAM* param
        cdef int ok
        self.origin = origin
        OPENSSL.ERR_clear_error()
        self.ssl = OPENSSL.SSL_new(origin.ctx)
        if self.ssl == NULL:
            raise MemoryError("SSL_new failed")
        self.incoming = OPENSSL.BIO_new(OPENSSL.BIO_s_mem())
        self.outgoing = OPENSSL.BIO_new(OPENSSL.BIO_s_mem())
        OPENSSL.SSL_set_bio(self.ssl, self.incoming, self.outgoing)   # (owned by ssl now)
        if self.incoming == NULL or self.outgoing == NULL:
            self.release()
            raise MemoryError("BIO_new failed")
        OPENSSL.SSL_set_connect_state(self.ssl)
        OPENSSL.SSL_ctrl(self.ssl, SSL_CTRL_MODE, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, NULL)
        if origin.server_name is not None:
            OPENSSL.SSL_ctrl(self.ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                             <char*>origin.server_name)
        if origin.check_name is not None:
            param = OPENSSL.SSL_get0_param(self.ssl)
            if origin.check_ip:
                ok = OPENSSL.X509_VERIFY_PARAM_set1_ip_asc(param, origin.check_name)
            else:
                ok = OPENSSL.X509_VERIFY_PARAM_set1_host(param, origin.check_name,
                                                         len(origin.check_name))
            if not ok:
                self.release()
                raise ValueError(f"cannot check the certificate for {origin.check_name!r}")
        if origin.session != NULL:
            OPENSSL.SSL_set_session(self.ssl, origin.session)

    def __dealloc__(self):
        self.release()

    cdef void release(self) noexcept:
        """End of the connection: keep its session for the next one, free the SSL."""
        if self.ssl != NULL:
            if self.handshaken:
                self.origin.keep_session(self.ssl)
                # No close_notify is sent (as wrk): without this SSL_free would mark the
                # session not resumable, the one just kept included.
                OPENSSL.SSL_set_shutdown(self.ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN)
            OPENSSL.SSL_free(self.ssl)          # frees both BIOs
            self.ssl = NULL
        self.incoming = self.outgoing = NULL

    cdef int feed(self, const char* at, Py_ssize_t size) noexcept:
        """Ciphertext read from the socket; -1 if the BIO cannot take it (memory)."""
        cdef int n
        while size > 0:
            n = OPENSSL.BIO_write(self.incoming, at, <int>min(size, 1 << 30))
            if n <= 0:
                return -1
            at += n
            size -= n
        return 0

    cdef int handshake(self) noexcept:
        """1: done; 0: waiting for the server; else the failing return value (<= 0)."""
        cdef int ret = OPENSSL.SSL_do_handshake(self.ssl)
        if ret == 1:
            self.handshaken = True
            return 1
        if OPENSSL.SSL_get_error(self.ssl, ret) == SSL_ERROR_WANT_READ:
            return 0
        return ret if ret < 0 else -1

    cdef int encrypt(self, const char* at, Py_ssize_t size) noexcept:
        """SSL_write all of it (the memory BIO takes everything); 0, or -1 on failure."""
        cdef int n
        while size > 0:
            n = OPENSSL.SSL_write(self.ssl, at, <int>min(size, 1 << 30))
            if n <= 0:
                return -1
            at += n
            size -= n
        return 0

    cdef int decrypt(self) noexcept:
        """Bytes of plaintext now in TLS_PLAIN (> 0); 0: nothing until more is read;
        -1: the server closed TLS (close_notify); -2: an error (failure() says which)."""
        cdef int n = OPENSSL.SSL_read(self.ssl, TLS_PLAIN, TLS_RECORD_MAX)
        if n > 0:
            return n
        cdef int err = OPENSSL.SSL_get_error(self.ssl, n)
        if err == SSL_ERROR_WANT_READ:
            return 0
        if err == SSL_ERROR_ZERO_RETURN:
            return -1
        return -2

    cdef str failure(self, int ret):
        """Why the last call failed, in one line; clears OpenSSL's error queue."""
        cdef long verify = OPENSSL.SSL_get_verify_result(self.ssl)
        cdef int err = OPENSSL.SSL_get_error(self.ssl, ret)
        cdef unsigned long code = OPENSSL.ERR_get_error()
        cdef const char* reason
        OPENSSL.ERR_clear_error()
        if verify != X509_V_OK and not self.handshaken:
            return ("certificate verify failed: "
                    + OPENSSL.X509_verify_cert_error_string(verify).decode("utf-8", "replace"))
        if code:
            reason = OPENSSL.ERR_reason_error_string(code)
            if reason != NULL:
                return reason.decode("utf-8", "replace")
            return f"OpenSSL error {code:#x}"
        if err == SSL_ERROR_ZERO_RETURN or err == SSL_ERROR_SYSCALL:
            return "the server closed the connection"
        return f"SSL error {err}"

    cdef Py_ssize_t outgoing_size(self) noexcept:
        return OPENSSL.BIO_ctrl_pending(self.outgoing)

    cdef int take_outgoing(self) noexcept:
        """Up to TLS_CIPHER_CHUNK bytes of ciphertext to send, moved into TLS_CIPHER."""
        return OPENSSL.BIO_read(self.outgoing, TLS_CIPHER, TLS_CIPHER_CHUNK)

    @property
    def session_reused(self):
        return self.ssl != NULL and OPENSSL.SSL_session_reused(self.ssl) == 1


cdef void* openssl_symbol(void* library, const char* name) except NULL:
    cdef void* found = dlsym(library, name)
    if found == NULL:
        raise ImportError(f"the OpenSSL Python's ssl module uses has no {name.decode()}; "
                          "loadtester needs OpenSSL 1.1.1 or later")
    return found


cdef void check_context_layout() except *:
    # The SSL_CTX read through the PySSLContext pointer must be the context's own.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cdef SSL_CTX* ctx = (<PySSLContextHead*><PyObject*>context).ctx
    if (ctx == NULL or OPENSSL.SSL_CTX_get_verify_mode(ctx) != SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
            or OPENSSL.SSL_CTX_get_options(ctx) != <uint64_t>context.options):
        raise ImportError("Python's ssl.SSLContext is not laid out as loadtester expects")
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
    if (OPENSSL.SSL_CTX_get_verify_mode(ctx) != 0
            or OPENSSL.SSL_CTX_get_options(ctx) != <uint64_t>context.options):
        raise ImportError("Python's ssl.SSLContext is not laid out as loadtester expects")


cdef void bind_openssl() except *:
    import _ssl
    cdef bytes path = os.fsencode(_ssl.__file__) if getattr(_ssl, "__file__", None) else None
    cdef void* library
    if path is None:
        library = dlopen(NULL, RTLD_NOW)    # built into the interpreter: the process's own
    else:
        library = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if library == NULL:
        raise ImportError(f"cannot open Python's ssl module: {dlerror().decode()}")
    OPENSSL.SSL_new = <SSL* (*)(SSL_CTX*) noexcept nogil>openssl_symbol(library, b"SSL_new")
    OPENSSL.SSL_free = <void (*)(SSL*) noexcept nogil>openssl_symbol(library, b"SSL_free")
    OPENSSL.SSL_set_connect_state = <void (*)(SSL*) noexcept nogil>openssl_symbol(
        library, b"SSL_set_connect_state")
    OPENSSL.SSL_set_bio = <void (*)(SSL*, BIO*, BIO*) noexcept nogil>openssl_symbol(
        library, b"SSL_set_bio")
    OPENSSL.SSL_do_handshake = <int (*)(SSL*) noexcept nogil>openssl_symbol(
        library, b"SSL_do_handshake")
    OPENSSL.SSL_read = <int (*)(SSL*, void*, int) noexcept nogil>openssl_symbol(
        library, b"SSL_read")
    OPENSSL.SSL_write = <int (*)(SSL*, const void*, int) noexcept nogil>openssl_symbol(
        library, b"SSL_write")
    OPENSSL.SSL_get_error = <int (*)(const SSL*, int) noexcept nogil>openssl_symbol(
        library, b"SSL_get_error")
    OPENSSL.SSL_ctrl = <long (*)(SSL*, int, long, void*) noexcept nogil>openssl_symbol(
        library, b"SSL_ctrl")
    OPENSSL.SSL_set_shutdown = <void (*)(SSL*, int) noexcept nogil>openssl_symbol(
        library, b"SSL_set_shutdown")
    OPENSSL.SSL_set_session = <int (*)(SSL*, SSL_SESSION*) noexcept nogil>openssl_symbol(
        library, b"SSL_set_session")
    OPENSSL.SSL_get_session = <SSL_SESSION* (*)(const SSL*) noexcept nogil>openssl_symbol(
        library, b"SSL_get_session")
    OPENSSL.SSL_get1_session = <SSL_SESSION* (*)(SSL*) noexcept nogil>openssl_symbol(
        library, b"SSL_get1_session")
    OPENSSL.SSL_SESSION_free = <void (*)(SSL_SESSION*) noexcept nogil>openssl_symbol(
        library, b"SSL_SESSION_free")
    OPENSSL.SSL_SESSION_is_resumable = <int (*)(const SSL_SESSION*) noexcept nogil>(
        openssl_symbol(library, b"SSL_SESSION_is_resumable"))
    OPENSSL.SSL_session_reused = <int (*)(const SSL*) noexcept nogil>openssl_symbol(
        library, b"SSL_session_reused")
    OPENSSL.SSL_get0_param = <X509_VERIFY_PARAM* (*)(SSL*) noexcept nogil>openssl_symbol(
        library, b"SSL_get0_param")
    OPENSSL.X509_VERIFY_PARAM_set1_host = <int (*)(X509_VERIFY_PARAM*, const char*, size_t) noexcept nogil>openssl_symbol(
        library, b"X509_VERIFY_PARAM_set1_host")
    OPENSSL.X509_VERIFY_PARAM_set1_ip_asc = <int (*)(X509_VERIFY_PARAM*, const char*) noexcept nogil>openssl_symbol(
        library, b"X509_VERIFY_PARAM_set1_ip_asc")
    OPENSSL.SSL_get_verify_result = <long (*)(const SSL*) noexcept nogil>openssl_symbol(
        library, b"SSL_get_verify_result")
    OPENSSL.X509_verify_cert_error_string = <const char* (*)(long) noexcept nogil>(
        openssl_symbol(library, b"X509_verify_cert_error_string"))
    OPENSSL.SSL_CTX_get_verify_mode = <int (*)(const SSL_CTX*) noexcept nogil>openssl_symbol(
        library, b"SSL_CTX_get_verify_mode")
    OPENSSL.SSL_CTX_get_options = <uint64_t (*)(const SSL_CTX*) noexcept nogil>openssl_symbol(
        library, b"SSL_CTX_get_options")
    OPENSSL.SSL_CTX_set_keylog_callback = <void (*)(SSL_CTX*, keylog_callback) noexcept nogil>openssl_symbol(
        library, b"SSL_CTX_set_keylog_callback")
    OPENSSL.BIO_s_mem = <const BIO_METHOD* (*)() noexcept nogil>openssl_symbol(
        library, b"BIO_s_mem")
    OPENSSL.BIO_new = <BIO* (*)(const BIO_METHOD*) noexcept nogil>openssl_symbol(
        library, b"BIO_new")
    OPENSSL.BIO_write = <int (*)(BIO*, const void*, int) noexcept nogil>openssl_symbol(
        library, b"BIO_write")
    OPENSSL.BIO_read = <int (*)(BIO*, void*, int) noexcept nogil>openssl_symbol(
        library, b"BIO_read")
    OPENSSL.BIO_ctrl_pending = <size_t (*)(BIO*) noexcept nogil>openssl_symbol(
        library, b"BIO_ctrl_pending")
    OPENSSL.ERR_get_error = <unsigned long (*)() noexcept nogil>openssl_symbol(
        library, b"ERR_get_error")
    OPENSSL.ERR_clear_error = <void (*)() noexcept nogil>openssl_symbol(
        library, b"ERR_clear_error")
    OPENSSL.ERR_reason_error_string = <const char* (*)(unsigned long) noexcept nogil>(
        openssl_symbol(library, b"ERR_reason_error_string"))
    check_context_layout()


# Why the engine cannot speak TLS on this Python ("" when it can). Binding OpenSSL is the
# one part of the engine that depends on how Python's ssl module is built; when it fails,
# plain HTTP still runs and an https URL is refused before the run (run.runner.preflight).
cdef str TLS_UNAVAILABLE = ""
try:
    bind_openssl()
except ImportError as exc:
    TLS_UNAVAILABLE = str(exc)


def tls_unavailable():
    """Why HTTPS cannot be sent from this Python (None when it can)."""
    return TLS_UNAVAILABLE or None
