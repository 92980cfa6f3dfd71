"""Run locks: `<db>.run-<uuid>.lock`, held (flock, exclusive) by the process writing that run.

A 'running' row whose lock nobody holds was left by a writer that is gone (killed, crashed):
the next writable open closes it out (recovery), and reading commands show it as interrupted.
The lock file also holds the run's space reserve: RESERVE_BYTES allocated when the run begins
and given back just before the run's last write, so that a run on a disk that filled up can
still record how it ended."""
from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
from typing import TYPE_CHECKING

from loadtester.store.connection import StoreError, error_reason, remove_quietly

if TYPE_CHECKING:
    from _typeshed import StrPath

RESERVE_BYTES = 128 << 10

# Run-lock descriptors this process holds.  A forked child (the runner forks its workers) must
# not keep them: the flock would outlive a killed parent, and its run would never be reaped.
_HELD_LOCK_FDS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in list(_HELD_LOCK_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)                              # the parent's copy keeps the lock
    _HELD_LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def run_lock_path(db_path: StrPath, run_uuid: str) -> pathlib.Path:
    """The lock file a live run holds (flock, exclusive) next to its database."""
    db = pathlib.Path(os.path.realpath(db_path))
    return db.with_name(f"{db.name}.run-{run_uuid}.lock")


def lock_files(db_path: StrPath) -> list[pathlib.Path]:
    """Every run lock file next to the database."""
    db = pathlib.Path(os.path.realpath(db_path))
    prefix, suffix = f"{db.name}.run-", ".lock"
    try:
        names = os.listdir(db.parent)
    except OSError:
        return []
    return sorted(db.parent / n for n in names if n.startswith(prefix) and n.endswith(suffix))


def lock_uuid(db_path: StrPath, lock_path: pathlib.Path) -> str:
    db = pathlib.Path(os.path.realpath(db_path))
    return lock_path.name[len(f"{db.name}.run-"):-len(".lock")]


def try_lock(lock_path: pathlib.Path) -> tuple[bool, int | None]:
    """(writer gone?, fd holding its lock or None).  A missing lock file means gone."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True, None
    except OSError:
        return False, None                            # cannot tell: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False, None
    return True, fd


def writer_gone(db_path: StrPath, run_uuid: str) -> bool:
    """Whether nobody holds the run's lock (its writer is gone), without changing anything."""
    gone, fd = try_lock(run_lock_path(db_path, run_uuid))
    if fd is not None:
        os.close(fd)
    return gone


def acquire(lock_path: pathlib.Path) -> int:
    """Create and lock a run's lock file; write our pid and allocate the space reserve."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot create run lock file {lock_path}: {error_reason(exc)}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as exc:
        os.close(fd)
        remove_quietly(lock_path)
        raise StoreError(f"cannot lock run lock file {lock_path}: {error_reason(exc)}") from exc
    with contextlib.suppress(OSError):               # no room, or no fallocate: no reserve
        os.posix_fallocate(fd, 0, RESERVE_BYTES)
    _HELD_LOCK_FDS.add(fd)
    return fd


def give_back_reserve(fd: int | None) -> None:
    """Free the run's space reserve (its last writes may need it)."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)


def release(fd: int | None, lock_path: pathlib.Path | None) -> None:
    """Unlink the lock file while still holding it, then let go."""
    if fd is None:
        return
    if lock_path is not None:
        with contextlib.suppress(OSError):
            remove_quietly(lock_path)
    _HELD_LOCK_FDS.discard(fd)
    with contextlib.suppress(OSError):
        os.close(fd)
