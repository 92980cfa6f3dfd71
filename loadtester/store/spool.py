"""A run's spool: `<db>.spool-<uuid>`, next to the database.

Request records and windows land here first: one sequential append each, made by the thread
that received them (never a wait for SQLite), and the writer thread moves them into the
database.  The file survives the process: after kill -9 the next writable open replays what
the database does not hold yet into the run it belongs to (recovery.py), then deletes it.

    header  magic 'LTSPOOL1', the run's uuid (36 bytes), base (u64), first (u64)
    frames  length (u32), kind (u8), crc32 of the payload (u32), payload

Offsets are logical: a frame's offset is base + its position after the header, so they only
grow, also across the resets that empty the file once everything in it is stored.  The
stored front of a busy spool is given back to the filesystem (a hole) once `first`, the
position of the first frame still needed, has moved past it.  The run's
`test_runs.spooled` column holds the logical end of the last record frame committed, in the
same transaction as those rows: replay skips what is below it.  Window frames are replayed
whole (a stored window is never inserted twice)."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import pathlib
import struct
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from loadtester.model import Window

if TYPE_CHECKING:
    from _typeshed import StrPath

MAGIC = b"LTSPOOL1"
HEADER = struct.Struct("<8s36sQQ")
FRAME = struct.Struct("<IBI")
_WINDOW = struct.Struct("<III")
_PAGE = 4096
_PUNCH_HOLE = 0x02 | 0x01                              # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
try:                                                   # loaded now, not in a forked child
    _fallocate: Any = ctypes.CDLL(None, use_errno=True).fallocate
    _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
except (OSError, AttributeError):                      # pragma: no cover - not Linux
    _fallocate = None
KIND_RECORDS = 1
KIND_WINDOW = 2
MAX_FRAME_BYTES = 256 << 20


def spool_path(db_path: StrPath, run_uuid: str) -> pathlib.Path:
    db = pathlib.Path(os.path.realpath(db_path))
    return db.with_name(f"{db.name}.spool-{run_uuid}")


def spool_files(db_path: StrPath) -> list[tuple[str, pathlib.Path]]:
    """(run uuid, path) of every spool file next to the database."""
    db = pathlib.Path(os.path.realpath(db_path))
    prefix = f"{db.name}.spool-"
    try:
        names = os.listdir(db.parent)
    except OSError:
        return []
    return sorted((n[len(prefix):], db.parent / n) for n in names
                  if n.startswith(prefix) and len(n) == len(prefix) + 36)


class Spool:
    """The writing side (RunWriter): appends from any thread (the caller serialises them),
    reads and resets from the writer thread."""

    def __init__(self, path: pathlib.Path, run_uuid: str) -> None:
        self.path = path
        self.run_uuid = run_uuid
        self.base = 0
        self.end = HEADER.size
        self.first = HEADER.size
        self._released = _PAGE
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            self._write_header()
        except OSError:
            self.close()
            with contextlib.suppress(OSError):
                os.remove(path)
            raise

    def _write_header(self) -> None:
        header = HEADER.pack(MAGIC, self.run_uuid.encode("ascii"), self.base, self.first)
        if os.pwrite(self.fd, header, 0) != HEADER.size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def logical(self, pos: int) -> int:
        return self.base + pos - HEADER.size

    def append(self, kind: int, payload: bytes) -> None:
        """One frame at the end; on any failure (a full disk) the file is as it was."""
        frame = FRAME.pack(len(payload), kind, zlib.crc32(payload))
        try:
            written = os.pwritev(self.fd, [frame, payload], self.end)
        except OSError:
            self._cut()
            raise
        if written != len(frame) + len(payload):
            self._cut()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.end += written

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, self.end)          # no torn frame left behind

    def read(self, pos: int) -> tuple[int, bytes, int]:
        """The frame at pos (below end: written by us): (kind, payload, next pos)."""
        length, kind, _crc = FRAME.unpack(os.pread(self.fd, FRAME.size, pos))
        payload = os.pread(self.fd, length, pos + FRAME.size)
        return kind, payload, pos + FRAME.size + length

    def reset(self) -> None:
        """Empty the file (everything in it is stored); offsets go on from where they were."""
        self.base = self.logical(self.end)
        os.ftruncate(self.fd, HEADER.size)            # (the header's page stays: no new space)
        self.end = self.first = HEADER.size
        self._released = _PAGE
        self._write_header()

    def release(self, upto: int) -> None:
        """Everything before position `upto` (a frame boundary) is stored: record that in the
        header, then give the disk space of the whole pages before it back to the filesystem
        (a hole: the file keeps its size and offsets), where holes are supported."""
        stop = upto // _PAGE * _PAGE
        if _fallocate is None or stop <= self._released:
            return
        self.first = upto
        self._write_header()                           # first: replays start there, past the hole
        if _fallocate(self.fd, _PUNCH_HOLE, self._released, stop - self._released) == 0:
            self._released = stop

    @property
    def pending_bytes(self) -> int:
        return self.end - HEADER.size

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)


def read_frames(path: pathlib.Path, run_uuid: str) -> Iterator[tuple[int, int, bytes]]:
    """(logical end offset, kind, payload) of each whole frame of a spool file, in order;
    stops at a torn or damaged tail (what a kill in the middle of an append leaves).
    OSError when the file cannot be read; nothing when it is not this run's spool."""
    with open(path, "rb") as f:
        header = f.read(HEADER.size)
        if len(header) < HEADER.size:
            return                                     # killed while resetting: nothing in it
        magic, uuid_bytes, base, first = HEADER.unpack(header)
        if magic != MAGIC or uuid_bytes != run_uuid.encode("ascii") or first < HEADER.size:
            return
        f.seek(first)
        pos = first - HEADER.size
        while True:
            head = f.read(FRAME.size)
            if len(head) < FRAME.size:
                return
            length, kind, crc = FRAME.unpack(head)
            if length > MAX_FRAME_BYTES:
                return
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            pos += FRAME.size + length
            yield base + pos, kind, payload


# --------------------------------------------------------------------------- windows

_WINDOW_KEYS = ("worker", "second", "loop_lag_us", "in_flight", "cpu_us", "partial")


def encode_window(window: Window) -> bytes:
    """A window as one frame's payload: JSON for the numbers, the histogram blobs raw."""
    meta: dict[str, Any] = {k: window.get(k) for k in _WINDOW_KEYS}
    counters: dict[str, Any] = dict(window["counters"])
    counters["status"] = {str(k): v for k, v in (counters.get("status") or {}).items()}
    meta["counters"] = counters
    text = json.dumps(meta, separators=(",", ":")).encode()
    latency = bytes(window.get("latency") or b"")
    service = bytes(window.get("service") or b"")
    return _WINDOW.pack(len(text), len(latency), len(service)) + text + latency + service


def decode_window(payload: bytes) -> Window:
    n_text, n_lat, n_svc = _WINDOW.unpack_from(payload)
    start = _WINDOW.size
    meta = json.loads(payload[start:start + n_text])
    start += n_text
    latency = payload[start:start + n_lat]
    service = payload[start + n_lat:start + n_lat + n_svc]
    meta["latency"] = latency or None
    meta["service"] = service or None
    counters = meta.get("counters") or {}
    counters["status"] = {int(k): v for k, v in (counters.get("status") or {}).items()}
    return cast(Window, meta)
