# Declarations of loadtester._engine: the one compiled extension.
# Bodies live in the .pyx files included by _engine.pyx.

from libc.stdint cimport int64_t, uint64_t, uint32_t, uint16_t, uint8_t

cdef extern from *:
    # Sums of squared microseconds overflow 64 bits; 128 keeps merges exact.
    ctypedef unsigned long long uint128_t "unsigned __int128"


cdef enum:
    # Log-linear layout, HdrHistogram style: values below SUB_BUCKET_COUNT are
    # exact; above, each power of two is split into SUB_BUCKET_HALF buckets, so
    # a recorded value is off by at most 1/128 (< 1%) of itself.
    SUB_BUCKET_BITS = 8
    SUB_BUCKET_COUNT = 256
    SUB_BUCKET_HALF = 128
    MAX_SHIFT = 32               # top bucket starts at 2**39 us, ~6 days
    COUNTS_LEN = 4352            # SUB_BUCKET_COUNT + MAX_SHIFT * SUB_BUCKET_HALF

    STATUS_CODES_LEN = 600       # counters for codes 0..599; others land on 0

    RECORDS_PER_BUFFER = 8192


# Error kinds, stored as small integers in request rows.
cdef enum ErrorKind:
    ERR_NONE = 0
    ERR_CONNECT = 1
    ERR_TIMEOUT = 2
    ERR_READ = 3
    ERR_WRITE = 4
    ERR_PARSE = 5
    ERR_KINDS = 6


# One stored request; 24 bytes, little-endian, no padding.
cdef packed struct RequestRecord:
    uint64_t start_us          # intended send time, since the run's start
    uint32_t latency_us        # corrected: intended send -> last byte read
    uint32_t wait_us           # intended send -> actual write (generator lag)
    uint32_t bytes_read
    uint16_t status
    uint8_t error
    uint8_t worker


cdef class Histogram:
    cdef int64_t counts[COUNTS_LEN]
    cdef readonly int64_t total
    cdef readonly uint64_t min_us
    cdef readonly uint64_t max_us
    cdef readonly uint64_t sum_us
    cdef uint128_t sum_sq_us

    cdef void record(self, uint64_t value_us) noexcept
    cpdef void merge(self, Histogram other)
    cpdef void reset(self)
    cpdef uint64_t value_at_percentile(self, double percentile)


cdef class Counters:
    # Everything counted per response, for a window or a whole run.
    cdef readonly int64_t responses
    cdef readonly int64_t successes
    cdef readonly int64_t bytes_read
    cdef int64_t errors[ERR_KINDS]
    cdef int64_t status_codes[STATUS_CODES_LEN]
    cdef readonly uint64_t max_wait_us

    cpdef void merge(self, Counters other)
    cpdef void reset(self)


cdef class Recorder:
    # Per worker: the open one-second window, and the run's totals (the exact
    # merge of the windows closed so far).
    cdef readonly Histogram latency            # corrected
    cdef readonly Histogram service            # uncorrected: actual write -> response
    cdef readonly Histogram window_latency
    cdef readonly Histogram window_service
    cdef readonly Counters totals
    cdef readonly Counters window

    cdef void record_response(self, uint64_t corrected_us, uint64_t uncorrected_us,
                                     uint64_t wait_us, int status, int64_t nbytes) noexcept
    cdef void record_error(self, int kind) noexcept


cdef class RecordBuffer:
    cdef RequestRecord* records
    cdef Py_ssize_t used
    cdef readonly bint enabled
    cdef object flush_to                       # callable(bytes), called once per full buffer

    cdef void add(self, uint64_t start_us, uint64_t latency_us, uint64_t wait_us,
                         uint64_t nbytes, int status, int error, int worker) noexcept
    cpdef flush(self)


# httptools' llhttp, called in C. The layouts come from the llhttp.h that
# httptools vendors (engine/vendor/llhttp); the functions are the ones its
# parser module was built with, found at import (llhttp.pyx).
cdef extern from "llhttp.h":
    ctypedef struct llhttp_t:
        void* data
        uint16_t status_code
        uint8_t method
        const char* reason             # why llhttp_execute stopped (an error's text)
        const char* error_pos          # where it stopped (an error, or HPE_PAUSED)
    ctypedef int (*llhttp_cb)(llhttp_t*) noexcept
    ctypedef int (*llhttp_data_cb)(llhttp_t*, const char* at, size_t length) noexcept
    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin
        llhttp_data_cb on_url
        llhttp_cb on_headers_complete
        llhttp_cb on_message_complete
    ctypedef enum llhttp_errno_t:
        HPE_OK
        HPE_PAUSED
        HPE_PAUSED_UPGRADE
    ctypedef enum llhttp_type_t:
        HTTP_REQUEST
        HTTP_RESPONSE
    ctypedef enum llhttp_method_t:
        HTTP_HEAD

ctypedef void (*llhttp_init_fn)(llhttp_t*, llhttp_type_t, const llhttp_settings_t*) noexcept
ctypedef void (*llhttp_settings_init_fn)(llhttp_settings_t*) noexcept
ctypedef llhttp_errno_t (*llhttp_execute_fn)(llhttp_t*, const char*, size_t) noexcept
ctypedef llhttp_errno_t (*llhttp_finish_fn)(llhttp_t*) noexcept
ctypedef int (*llhttp_should_keep_alive_fn)(const llhttp_t*) noexcept

cdef struct LlhttpApi:
    llhttp_init_fn init
    llhttp_settings_init_fn settings_init
    llhttp_execute_fn execute
    llhttp_finish_fn finish
    llhttp_should_keep_alive_fn should_keep_alive


# OpenSSL, called in C by tls.pyx: the functions of the libssl/libcrypto that Python's own
# ssl module is linked with, found at import with dlsym (no headers, no link step). The
# handles are opaque: only pointers to them are passed around.
ctypedef void SSL
ctypedef void SSL_CTX
ctypedef void SSL_SESSION
ctypedef void BIO
ctypedef void BIO_METHOD
ctypedef void X509_VERIFY_PARAM

ctypedef void (*keylog_callback)(const SSL*, const char* line) noexcept nogil

cdef struct OpenSslApi:
    SSL* (*SSL_new)(SSL_CTX*) noexcept nogil
    void (*SSL_free)(SSL*) noexcept nogil
    void (*SSL_set_connect_state)(SSL*) noexcept nogil
    void (*SSL_set_bio)(SSL*, BIO* rbio, BIO* wbio) noexcept nogil
    int (*SSL_do_handshake)(SSL*) noexcept nogil
    int (*SSL_read)(SSL*, void* buf, int size) noexcept nogil
    int (*SSL_write)(SSL*, const void* buf, int size) noexcept nogil
    int (*SSL_get_error)(const SSL*, int ret) noexcept nogil
    long (*SSL_ctrl)(SSL*, int cmd, long larg, void* parg) noexcept nogil
    void (*SSL_set_shutdown)(SSL*, int mode) noexcept nogil
    int (*SSL_set_session)(SSL*, SSL_SESSION*) noexcept nogil
    SSL_SESSION* (*SSL_get_session)(const SSL*) noexcept nogil
    SSL_SESSION* (*SSL_get1_session)(SSL*) noexcept nogil
    void (*SSL_SESSION_free)(SSL_SESSION*) noexcept nogil
    int (*SSL_SESSION_is_resumable)(const SSL_SESSION*) noexcept nogil
    int (*SSL_session_reused)(const SSL*) noexcept nogil
    X509_VERIFY_PARAM* (*SSL_get0_param)(SSL*) noexcept nogil
    int (*X509_VERIFY_PARAM_set1_host)(X509_VERIFY_PARAM*, const char*, size_t) noexcept nogil
    int (*X509_VERIFY_PARAM_set1_ip_asc)(X509_VERIFY_PARAM*, const char*) noexcept nogil
    long (*SSL_get_verify_result)(const SSL*) noexcept nogil
    const char* (*X509_verify_cert_error_string)(long) noexcept nogil
    int (*SSL_CTX_get_verify_mode)(const SSL_CTX*) noexcept nogil
    uint64_t (*SSL_CTX_get_options)(const SSL_CTX*) noexcept nogil
    void (*SSL_CTX_set_keylog_callback)(SSL_CTX*, keylog_callback) noexcept nogil
    const BIO_METHOD* (*BIO_s_mem)() noexcept nogil
    BIO* (*BIO_new)(const BIO_METHOD*) noexcept nogil
    int (*BIO_write)(BIO*, const void* buf, int size) noexcept nogil
    int (*BIO_read)(BIO*, void* buf, int size) noexcept nogil
    size_t (*BIO_ctrl_pending)(BIO*) noexcept nogil
    unsigned long (*ERR_get_error)() noexcept nogil
    void (*ERR_clear_error)() noexcept nogil
    const char* (*ERR_reason_error_string)(unsigned long) noexcept nogil


cdef class TlsOrigin:
    # What every TLS connection to one origin shares: Python's SSLContext (its SSL_CTX:
    # verification, CA, ciphers), the name to send and check, the last resumable session.
    cdef object context                # ssl.SSLContext (keeps ctx alive)
    cdef SSL_CTX* ctx
    cdef bytes server_name             # SNI (None for an IP address)
    cdef bytes check_name              # host or IP checked against the certificate; None: no check
    cdef bint check_ip
    cdef SSL_SESSION* session          # last resumable session (one reference held)

    cdef void keep_session(self, SSL* ssl) noexcept


cdef class TlsStream:
    # One TLS connection driven over memory BIOs: ciphertext in from data_received,
    # out by send(2) on the socket (or the transport when the socket is full).
    cdef TlsOrigin origin
    cdef SSL* ssl
    cdef BIO* incoming                 # owned by ssl
    cdef BIO* outgoing                 # owned by ssl
    cdef readonly bint handshaken

    cdef void release(self) noexcept
    cdef int feed(self, const char* at, Py_ssize_t size) noexcept
    cdef int handshake(self) noexcept
    cdef int encrypt(self, const char* at, Py_ssize_t size) noexcept
    cdef int decrypt(self) noexcept
    cdef str failure(self, int ret)
    cdef Py_ssize_t outgoing_size(self) noexcept
    cdef int take_outgoing(self) noexcept
