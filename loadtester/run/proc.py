"""Process helpers shared by the runner (worker processes) and the web app (blast processes):
die with the parent, read /proc, wait for a port."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import time

PR_SET_PDEATHSIG = 1
# Loaded at import, in the parent: a forked child must not dlopen (another thread may hold
# the loader's lock).
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:                                     # pragma: no cover - not Linux
    _LIBC = None


def die_with_parent(parent_pid: int) -> None:
    """In a forked child: be killed when the parent dies (even by -9), so no orphan goes on
    sending load; exit now if the parent is already gone."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def catches_sigterm(pid: int) -> bool | None:
    """Whether process pid has a SIGTERM handler in place; None when /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def children(pid: int) -> list[int]:
    """The pids of pid's child processes."""
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", "rb") as handle:
                kids.extend(int(k) for k in handle.read().split())
        return kids
    except (OSError, ValueError):
        pass
    for entry in os.listdir("/proc"):             # kernels without .../children
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    if int(handle.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return kids


def wait_ready(url: str, timeout_s: float = 10.0) -> None:
    """Block until something accepts TCP connections at url's host and port."""
    from loadtester.spec import parse_url

    parsed = parse_url(url)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((parsed.host, parsed.port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
