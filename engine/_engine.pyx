# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# loadtester._engine: the compiled hot path. Bodies are split across the
# included .pyx files; declarations are in _engine.pxd.

cimport cython
from libc.math cimport ceil, sqrt
from libc.stdint cimport int64_t, uint64_t, uint32_t, uint16_t, uint8_t, UINT64_MAX, UINT32_MAX, INT64_MAX
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memset, memcpy, memcmp, strlen
from posix.unistd cimport write
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from cpython.object cimport PyObject
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.errno cimport errno, EAGAIN, EINTR

import asyncio
import math
import socket
import ssl
import struct
import sys


cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil

cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void* buf, size_t size, int flags)
    int MSG_NOSIGNAL


include "histogram.pyx"
include "pacer.pyx"
include "llhttp.pyx"
include "tls.pyx"
include "client.pyx"
include "localtarget.pyx"
