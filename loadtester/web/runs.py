"""The blast subprocesses the server starts: RunProcess (one) and RunManager (all of them).

Runs are `loadtester blast` subprocesses of this server, started with PR_SET_PDEATHSIG=SIGKILL
so that a server killed even with -9 takes its blasts along (the store then marks such a run
'interrupted' on the next open).  The server picks the run's uuid (uuid4) and hands it to the
blast (`--uuid`), so POST /api/start answers at once.  What may be secret or large - the
request headers (an Authorization header, an auth's credentials) and the body - goes to the
blast in anonymous memory files (memfd) it inherits and reads as /dev/fd/N: never on its
command line, which `ps` shows to every user of the machine, and never on disk, so nothing
is left behind when the blast ends, fails to start or the server is killed.  stdout and
stderr are only drained; the
tail of stderr is kept to explain a blast that failed before it stored anything.  Stop =
SIGTERM to the blast, which stops cleanly and stores 'stopped'."""
from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import uuid as _uuid
from dataclasses import dataclass, field

from loadtester import store
from loadtester.reports.display import plain_number
from loadtester.run.proc import catches_sigterm, children, die_with_parent
from loadtester.spec import Pin, parse_url
from loadtester.units import utc_now_iso
from loadtester.web.logs import log_event
from loadtester.web.validation import StartParams

SHUTDOWN_WAIT_S = 10.0              # how long a shutdown waits for the blasts to store 'stopped'

# The source checkout this package may sit in (its blasts then import this copy).
SOURCE_ROOT = pathlib.Path(__file__).resolve().parents[2]


@dataclass
class RunProcess:
    uuid: str
    client: str
    params: StartParams
    proc: subprocess.Popen[bytes]
    started_mono: float
    started_at: str
    returncode: int | None = None
    stderr_tail: str = ""
    stop_requested: bool = False
    stop_signalled: bool = False
    ended_mono: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def alive(self) -> bool:
        return not self.done.is_set()

    def error_line(self) -> str:
        lines = [line.strip() for line in self.stderr_tail.splitlines() if line.strip()]
        return lines[-1] if lines else f"blast exited with status {self.returncode}"


def memory_file(name: str, data: bytes) -> int:
    """An anonymous file in memory holding `data` (a descriptor; gone with its last one)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)      # inherited only where passed (pass_fds)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        os.close(fd)
        raise
    return fd


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class RunManager:
    """The blast subprocesses this server started.

    spawn() must run on a thread that lives as long as the server (the event loop's): the
    parent-death signal fires when the *thread* that forked the child ends."""

    KEEP_FINISHED = 500

    def __init__(self, db_path: pathlib.Path):
        self.db_path = db_path
        self.runs: dict[str, RunProcess] = {}
        self.lock = threading.Lock()
        self.shutting_down = False
        self._stop_wanted = threading.Event()
        self._stopper_thread: threading.Thread | None = None

    def get(self, run_uuid: str) -> RunProcess | None:
        with self.lock:
            return self.runs.get(run_uuid)

    def active(self, client: str | None = None) -> list[RunProcess]:
        with self.lock:
            return [r for r in self.runs.values()
                    if r.alive and (client is None or r.client == client)]

    python = sys.executable                 # what runs `-m loadtester blast`

    def command(self, run_uuid: str, params: StartParams, *, headers_file: str | None = None,
                body_file: str | None = None, address: str | None = None) -> list[str]:
        """The blast's argv; `address`: the one ssrf.check_target allowed, which a named host
        is pinned to (--resolve) so that no second DNS answer can send the load elsewhere."""
        argv = [self.python, "-m", "loadtester", "blast", "-c", str(params.users),
                "-d", f"{plain_number(params.duration_s)}s", "--uuid", run_uuid,
                "--db", str(self.db_path), "--json", "--no-progress", "-m", params.method]
        if params.rate:
            argv.append(f"--rate={plain_number(params.rate)}")
        if params.ramp_up_s:
            argv.append(f"--ramp-up={plain_number(params.ramp_up_s)}s")
        if params.pipeline > 1:
            argv.append(f"--pipeline={params.pipeline}")
        if headers_file:
            argv.append(f"--headers-file={headers_file}")
        if body_file:
            argv.append(f"--body-file={body_file}")
        if address is not None and not is_ip_literal(params.host):
            target = parse_url(params.url)
            argv.append(f"--resolve={Pin(target.host, target.port, (address,))}")
        if params.mask_host:
            argv.append("--mask-host")
        if params.insecure:
            argv.append("--insecure")
        if params.label:
            argv.append(f"--label={params.label}")
        for expression in params.thresholds:
            argv.append(f"--threshold={expression}")
        if params.abort_on_error_rate:
            argv.append(f"--abort-on-error-rate={plain_number(params.abort_on_error_rate * 100)}%")
        argv += ["--", params.url]
        return argv

    def spawn(self, params: StartParams, client: str, address: str | None = None) -> RunProcess:
        run_uuid = str(_uuid.uuid4())
        fds: list[int] = []
        try:
            # Headers may carry secrets (`ps` shows every command line), and argv strings are
            # capped at 128 KiB on Linux (bodies): both go through memory files.
            headers_file = body_file = None
            if params.headers:
                lines = "".join(f"{name}: {value}\n" for name, value in params.headers)
                fds.append(memory_file("loadtester-headers", lines.encode("utf-8")))
                headers_file = f"/dev/fd/{fds[-1]}"
            if params.body:
                fds.append(memory_file("loadtester-body", params.body.encode("utf-8")))
                body_file = f"/dev/fd/{fds[-1]}"
            proc = self._popen(self.command(run_uuid, params, headers_file=headers_file,
                                            body_file=body_file, address=address), fds)
        finally:
            for fd in fds:              # the blast has its own copies (or never started)
                os.close(fd)
        run = RunProcess(uuid=run_uuid, client=client, params=params, proc=proc,
                         started_mono=time.monotonic(), started_at=utc_now_iso())
        with self.lock:
            self.runs[run_uuid] = run
            self._forget_old()
        threading.Thread(target=self._watch, args=(run,), name=f"blast-{run_uuid[:8]}",
                         daemon=True).start()
        self._ensure_stopper()
        return run

    def _popen(self, argv: list[str], fds: list[int]) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k not in ("LOADTESTER_TOKEN", "DB_PATH")}
        if (SOURCE_ROOT / "setup.py").exists():       # a source checkout: import this copy
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(SOURCE_ROOT), env.get("PYTHONPATH")) if p)
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, close_fds=True, pass_fds=fds, start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, os.getpid()))

    def _forget_old(self) -> None:
        finished = [r for r in self.runs.values() if not r.alive]
        if len(finished) > self.KEEP_FINISHED:
            finished.sort(key=lambda r: r.ended_mono or 0)
            for r in finished[:len(finished) - self.KEEP_FINISHED]:
                del self.runs[r.uuid]

    def _watch(self, run: RunProcess) -> None:
        try:
            _out, err = run.proc.communicate()       # drains both pipes; the data is unused
            run.stderr_tail = (err or b"")[-4000:].decode("utf-8", "replace")
        except Exception as exc:                    # pragma: no cover - defensive
            run.stderr_tail = str(exc)
            run.proc.wait()
        run.returncode = run.proc.returncode
        run.ended_mono = time.monotonic()
        if run.returncode != 0:
            # Killed or failed: let the store close out a row left 'running' (it only touches
            # rows whose writer is gone).
            with contextlib.suppress(Exception):
                store.open_database(self.db_path).close()
        run.done.set()
        log_event("run_exited", uuid=run.uuid, returncode=run.returncode,
                  seconds=round(run.ended_mono - run.started_mono, 3),
                  error=run.error_line() if run.returncode not in (0, None) else None)

    # Stopping.  A blast turns SIGTERM into a clean stop (status 'stopped') only once its
    # runner has installed the handler; before that (interpreter start-up, opening the
    # database) SIGTERM would kill it outright and the run would end 'failed'/'interrupted',
    # and after the run's end the handler is gone again while it writes the summary.  So the
    # signal is sent only while /proc/<pid>/status shows SIGTERM caught; until then a stop
    # stays pending and the stopper thread retries every STOP_POLL_S.
    STOP_POLL_S = 0.05

    def _ready_to_stop(self, pid: int) -> bool | None:
        """True when the blast and its worker processes all catch SIGTERM (a worker sent
        SIGTERM before its handler is in place dies, and the run is stored 'failed');
        None when /proc cannot tell."""
        main = catches_sigterm(pid)
        if main is not True:
            return main
        workers = children(pid)
        if not workers:
            return False
        return all(catches_sigterm(k) is not False for k in workers)

    def _signal_if_ready(self, run: RunProcess) -> None:
        if run.stop_signalled or run.done.is_set() or run.proc.returncode is not None:
            return
        ready = self._ready_to_stop(run.proc.pid)
        if ready is False:
            return
        run.stop_signalled = True
        with contextlib.suppress(OSError):
            os.kill(run.proc.pid, signal.SIGTERM)

    def _stopper(self) -> None:
        while True:
            pending = [r for r in list(self.runs.values())
                       if r.stop_requested and not r.stop_signalled and not r.done.is_set()]
            for run in pending:
                self._signal_if_ready(run)
            if not pending and not self.shutting_down:
                self._stop_wanted.wait(1.0)
                self._stop_wanted.clear()
            else:
                time.sleep(self.STOP_POLL_S)

    def _ensure_stopper(self) -> None:
        if self._stopper_thread is None:
            self._stopper_thread = threading.Thread(target=self._stopper, name="blast-stopper",
                                                    daemon=True)
            self._stopper_thread.start()

    def stop(self, run: RunProcess) -> None:
        run.stop_requested = True
        self._signal_if_ready(run)
        if not run.stop_signalled:
            self._ensure_stopper()
            self._stop_wanted.set()

    def stop_all(self) -> None:
        """Ask every live blast to stop.  Safe in a signal handler: no locks, no threads
        started (the stopper thread runs from the first spawn on)."""
        self.shutting_down = True
        for run in list(self.runs.values()):
            if not run.done.is_set():
                run.stop_requested = True
                self._signal_if_ready(run)
        # (no Event.set() here: it takes a lock the interrupted thread might hold; the
        # stopper thread notices shutting_down within a second)

    def wait_all(self, timeout_s: float) -> None:
        """Wait for every blast to end; SIGKILL those still running after timeout_s."""
        deadline = time.monotonic() + timeout_s
        self.stop_all()
        self._stop_wanted.set()
        for run in list(self.runs.values()):
            run.done.wait(max(0.0, deadline - time.monotonic()))
        late = [r for r in list(self.runs.values()) if not r.done.is_set()]
        for run in late:
            log_event("run_killed", uuid=run.uuid, reason="did not stop within the shutdown wait")
            with contextlib.suppress(OSError):
                run.proc.kill()
        for run in late:
            run.done.wait(5)
