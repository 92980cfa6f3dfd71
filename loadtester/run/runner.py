"""Run a blast: worker processes generate load, this process merges and stores.

Each worker is a process with its own uvloop loop and `_engine.Client`. It sends
framed messages up a pipe: full request-record buffers, closed one-second
windows, and at the end its exact totals (histograms as blobs). The pipe's
write side is non-blocking; when this process falls behind, the worker drops
record buffers and counts them instead of stalling its loop.
"""
from __future__ import annotations

import array
import dataclasses
import fcntl
import gc
import multiprocessing
import operator
import os
import pickle
import resource
import signal
import socket
import ssl
import struct
import threading
from multiprocessing.process import BaseProcess

from loadtester import _engine
from loadtester._engine import tls_unavailable
from loadtester.analysis import aggregate
from loadtester.run.proc import die_with_parent
from loadtester.spec import RunSpec, weighted_turns

FRAME_HEADER = struct.Struct("<IB")
FRAME_RECORDS = 1
FRAME_WINDOW = 2
FRAME_SUMMARY = 3
FRAME_FAILED = 4

WORKER_PENDING_LIMIT_BYTES = 32 << 20    # per worker, buffered in its pipe transport
PIPE_SIZE_BYTES = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
START_DELAY_NS = 150_000_000             # time for every worker to be ready at t=0


@dataclasses.dataclass
class RunResult:
    """A finished run, merged exactly across workers."""
    spec: RunSpec
    counters: _engine.Counters
    latency: _engine.Histogram          # corrected (from the intended send time)
    service: _engine.Histogram          # uncorrected (from the actual write)
    duration_s: float
    stop_reason: str
    dropped_records: int = 0
    max_loop_lag_us: int = 0
    targets: list = dataclasses.field(default_factory=list)   # [responses, successes, errors]
    # --data: per variant of the data's targets, [responses, successes, errors] one after another
    variants: array.array | None = None
    target_latency: list[_engine.Histogram] | None = None     # shaped runs: per target
    busy_seconds: int = 0        # worker-seconds with the generator's CPU >= 95% of a core
    worker_seconds: int = 0
    worker_errors: list = dataclasses.field(default_factory=list)
    error_messages: dict[str, str] = dataclasses.field(default_factory=dict)   # kind -> first
    stop_signal: int | None = None      # SIGINT / SIGTERM that stopped the run early
    # --resolve HOST:PORT:A,B: per address [connections, responses, successes, failed]
    addresses: dict[str, list[int]] | None = None

    @property
    def status(self) -> str:
        if self.worker_errors:
            return "failed"
        return "stopped" if self.stop_reason in ("interrupted", "stopped", "aborted") \
            else "completed"


# --- the worker process ------------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ssl_context(insecure: bool):
    context = ssl.create_default_context()
    # The engine drives OpenSSL itself on this context's SSL_CTX (engine/tls.pyx) and writes
    # SSLKEYLOGFILE itself; Python's key-log callback expects Python's own socket objects.
    context.keylog_filename = None  # type: ignore[assignment]  # (None turns it off)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def requests_per_target(spec: RunSpec) -> list[int]:
    """How many requests (variants) each target has in the engine: its rendered rows, or 1.
    The engine counts per variant; variants of a target are numbered one after the other."""
    rendered = spec.variants.requests if spec.variants else ()
    return [len(rendered[i]) if i < len(rendered) and rendered[i] else 1
            for i in range(len(spec.targets))]


def is_shaped(spec: RunSpec) -> bool:
    """Whether turns go by a schedule of targets (data rows, weights, journeys) rather than
    through a plain list of requests."""
    return spec.variants is not None or spec.weighted or spec.journey


MAX_TARGETS_WITH_LATENCY = 64            # a latency histogram per target up to this many


def targets_with_latency(spec: RunSpec) -> int:
    """How many per-target latency histograms the engine keeps: one per target of a shaped
    run with 2 to MAX_TARGETS_WITH_LATENCY targets (one target's latency is the run's)."""
    count = len(spec.targets)
    return count if is_shaped(spec) and 1 < count <= MAX_TARGETS_WITH_LATENCY else 0


def build_origins(spec: RunSpec, slot: int = 0, slots: int = 1) -> list:
    """One _engine.Origin per scheme://host:port, holding that origin's targets: each
    target's requests (its data variants, or its one request), and when the run is shaped
    (is_shaped) the schedule of turns over them. `slot` of `slots` (spec.share): this
    worker takes rows slot, slot + slots, ... so that all of them together take each in turn."""
    origins: dict[tuple, _engine.Origin] = {}
    groups: dict[tuple, list[tuple[int, int, int]]] = {}
    context = None
    variant_id = 0
    rendered = spec.variants.requests if spec.variants else ()
    for index, target in enumerate(spec.targets):
        if target.origin not in origins:
            tls = target.url.scheme == "https"
            if tls and context is None:
                context = _ssl_context(spec.insecure)
            # A pinned host:port (--resolve) connects to its address; TLS keeps the name.
            origins[target.origin] = _engine.Origin(
                spec.connect_hosts(target.url), target.url.port, context if tls else None,
                target.url.host if tls else None)
            groups[target.origin] = []
        requests = (rendered[index] if index < len(rendered) and rendered[index]
                    else (target.request_bytes(),))
        first = sum(count for _, count, _ in groups[target.origin])
        for request in requests:
            origins[target.origin].add_target(variant_id, request, target.method == "HEAD")
            variant_id += 1
        groups[target.origin].append((first, len(requests), index))
    if is_shaped(spec):
        if spec.variants is None:
            row_mode, rows = 0, 1
        else:
            rows = spec.variants.rows
            row_mode = 2 if spec.variants.per_connection else (1 if spec.journey else 0)
        for key, origin in origins.items():
            weights = [spec.targets[group].weight
                       for _, _, group in groups[key]]
            schedule = (list(range(len(weights))) if spec.journey or len(set(weights)) == 1
                        else weighted_turns(weights))
            origin.set_traffic(groups[key], schedule, walk=spec.journey, row_mode=row_mode,
                               n_rows=rows, first_row=slot, row_stride=slots)
    return list(origins.values())


def _worker_main(spec: RunSpec, worker: int, write_fd: int, start_ns: int, store_records: bool,
                 parent_pid: int):
    import asyncio

    import uvloop

    # A stop can arrive before the loop is up: SIGTERM was blocked across the fork
    # (run_blast), so it is remembered here rather than fatal.
    stop_requested = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.append(signum))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)
    # Objects made per read are short-lived and acyclic; the collector only
    # costs time on the hot path.
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)

    async def main():
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(write_fd, "wb", buffering=0)
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)
        dropped = 0

        def send(kind: int, payload: bytes) -> None:
            transport.write(FRAME_HEADER.pack(len(payload), kind) + payload)

        def on_records(blob: bytes) -> None:
            nonlocal dropped
            if transport.get_write_buffer_size() > WORKER_PENDING_LIMIT_BYTES:
                dropped += len(blob) // _engine.RECORD_SIZE
                return
            send(FRAME_RECORDS, blob)

        cpu_before = _cpu_seconds()

        def on_window(window: dict) -> None:
            nonlocal cpu_before
            cpu_now = _cpu_seconds()
            window["cpu_us"] = int((cpu_now - cpu_before) * 1e6)
            cpu_before = cpu_now
            send(FRAME_WINDOW, pickle.dumps(window, protocol=pickle.HIGHEST_PROTOCOL))

        share = spec.share(worker, spec.workers)
        client = _engine.Client(
            origins=build_origins(spec, share["slot"], share["slots"]),
            connections=share["connections"],
            max_requests=share["max_requests"], duration_s=spec.duration_s or 0.0,
            timeout_s=spec.timeout_s, rate_per_s=share["rate_per_s"],
            ramp_up_s=spec.ramp_up_s, phase_s=share["phase_s"],
            worker_index=worker, record_sink=on_records if store_records else None,
            window_sink=on_window, pipeline=spec.pipeline, think_min_s=spec.think_s[0],
            think_max_s=spec.think_s[1], seed=spec.seed or 0,
            group_latency=targets_with_latency(spec),
            first_connection=share["first_connection"])
        loop.add_signal_handler(signal.SIGTERM, client.stop, "interrupted")
        loop.add_signal_handler(signal.SIGINT, client.stop, "interrupted")
        if stop_requested:
            client.stop("interrupted")
        summary = await client.run(start_ns)
        summary["counters"] = summary["counters"].to_dict()
        summary["latency"] = summary["latency"].to_bytes()
        summary["service"] = summary["service"].to_bytes()
        summary["dropped_records"] = dropped
        send(FRAME_SUMMARY, pickle.dumps(summary, protocol=pickle.HIGHEST_PROTOCOL))
        while transport.get_write_buffer_size():
            await asyncio.sleep(0.005)
        transport.close()

    failure_fd = os.dup(write_fd)
    try:
        uvloop.run(main())
    except BaseException as exc:  # reported to the parent, which marks the run failed
        try:
            # (on its own descriptor: closing the loop closed write_fd with the transport)
            message = f"worker {worker}: {type(exc).__name__}: {exc}".encode()
            os.write(failure_fd, FRAME_HEADER.pack(len(message), FRAME_FAILED) + message)
        except OSError:
            pass
        os._exit(1)
    os._exit(0)


# --- this process -----------------------------------------------------------------


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


class _WorkerReader(threading.Thread):
    """Reads one worker's pipe until it closes; hands frames to the sinks."""

    def __init__(self, fd: int, on_records, on_window):
        super().__init__(daemon=True)
        self.fd = fd
        self.on_records = on_records
        self.on_window = on_window
        self.summary = None
        self.failure = None
        # What the worker's windows add up to, and the record buffers sent after its last
        # window (at most a second of rows): its counts should it die without a summary.
        self.totals = aggregate.Totals()
        self.records_after_window: list[bytes] = []

    def run(self):
        try:
            while True:
                header = _read_exact(self.fd, FRAME_HEADER.size)
                if header is None:
                    return
                size, kind = FRAME_HEADER.unpack(header)
                payload = _read_exact(self.fd, size)
                if payload is None:
                    return
                if kind == FRAME_RECORDS:
                    self.records_after_window.append(payload)
                    self.on_records(payload)
                elif kind == FRAME_WINDOW:
                    window = pickle.loads(payload)
                    self.totals.add(window)
                    self.records_after_window.clear()
                    self.on_window(window)
                elif kind == FRAME_SUMMARY:
                    self.summary = pickle.loads(payload)
                elif kind == FRAME_FAILED:
                    self.failure = payload.decode(errors="replace")
        finally:
            os.close(self.fd)


SATURATED_CPU_FRACTION = 0.95


class WindowMerger:
    """Adds up the workers' windows for one second; calls back once all are in.
    Also counts the worker-seconds in which a generator was CPU-bound."""

    def __init__(self, workers: int, on_second=None):
        self.workers = workers
        self.on_second = on_second
        self.pending: dict[int, list] = {}
        self.lock = threading.Lock()
        self.busy_seconds = 0
        self.worker_seconds = 0

    def add(self, window: dict) -> None:
        if window.get("partial"):
            return
        with self.lock:
            self.worker_seconds += 1
            if window.get("cpu_us", 0) >= SATURATED_CPU_FRACTION * 1e6:
                self.busy_seconds += 1
            if self.on_second is None:
                return
            parts = self.pending.setdefault(window["second"], [])
            parts.append(window)
            if len(parts) < self.workers:
                return
            del self.pending[window["second"]]
        totals = aggregate.total(parts)
        self.on_second(window["second"], totals.counters, totals.latency)


class RunControl:
    """Stops a running blast from another thread (Ctrl-C, a circuit breaker)."""

    def __init__(self):
        self.processes = []
        self.reason = None
        self.signal: int | None = None     # the signal that stopped the run (SIGINT, SIGTERM)

    def stop(self, reason: str = "stopped") -> None:
        if self.reason is None:
            self.reason = reason
        for process in self.processes:
            if process.pid and process.is_alive():
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass


class RunRefused(Exception):
    """The run cannot start as asked (open-file limit, a host that does not resolve); the
    message is one line."""


FDS_PER_WORKER_BESIDES_CONNECTIONS = 64   # pipes, the loop, stdio, libraries


def preflight(spec: RunSpec) -> list[str]:
    """Check what the run needs from this machine before anything is stored: every host
    resolves (a host:port pinned by --resolve is not looked up), and each worker can open its
    connections (the soft open-file limit is raised to the hard one when that is needed).
    RunRefused with one line otherwise; returns warnings worth printing (more workers than
    cores, a ramp-up longer than the run)."""
    warnings = []
    if any(target.url.scheme == "https" for target in spec.targets) and tls_unavailable():
        raise RunRefused(f"cannot send HTTPS from this Python: {tls_unavailable()}")
    pinned = {(pin.host, pin.port) for pin in spec.pins}          # --resolve: no DNS for them
    for host in sorted({target.url.host for target in spec.targets
                        if (target.url.host, target.url.port) not in pinned}):
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise RunRefused(f"cannot resolve host {host}: {reason}") from None
    per_worker = -(-spec.connections // (spec.workers * spec.shard[1]))
    need = per_worker + FDS_PER_WORKER_BESIDES_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need > soft:
        if hard != resource.RLIM_INFINITY and need > hard:
            raise RunRefused(
                f"{per_worker:,} connections per worker need about {need:,} open files, but this "
                f"process may open at most {hard:,} (ulimit -n); use fewer connections, more "
                "--workers, or raise the hard limit")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY
                                                    else hard, hard))
    cores = os.cpu_count() or 1
    if spec.workers > cores:
        warnings.append(f"{spec.workers} workers on {cores} cores: workers will share cores "
                        "and measure each other's waits")
    if spec.duration_s and spec.ramp_up_s > spec.duration_s:
        warnings.append(f"the ramp-up ({spec.ramp_up_s:g}s) is longer than the run "
                        f"({spec.duration_s:g}s): the full load is never reached")
    return warnings


def run_blast(spec: RunSpec, *, on_records=None, on_window=None, on_second=None,
              control: RunControl | None = None) -> RunResult:
    """Run `spec` to its end (or until SIGINT/SIGTERM) and return merged results.

    `on_records(blob)` gets full request-record buffers (only when given: the
    workers record no rows otherwise) and `on_window(dict)` every closed window;
    both are called from reader threads and must not block.
    `on_second(second, Counters, Histogram)` sees each second once every worker
    has closed it (for the live progress line).
    """
    context = multiprocessing.get_context("fork")
    start_ns = _engine.now_ns() + START_DELAY_NS
    merger = WindowMerger(spec.workers, on_second)
    control = control or RunControl()

    def window_arrived(window):
        merger.add(window)
        if on_window is not None:
            on_window(window)

    processes: list[BaseProcess] = []
    readers: list[_WorkerReader] = []
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        _start_workers(spec, context, start_ns, on_records, window_arrived, control,
                       processes, readers)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    for reader in readers:
        reader.start()

    def forward_stop(signum, frame):
        if control.signal is None:
            control.signal = signum
        control.stop("interrupted")

    previous = {sig: signal.signal(sig, forward_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for reader in readers:
            while reader.is_alive():
                reader.join(0.2)
        for process in processes:
            process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    result = _merge(spec, readers, processes, control.reason)
    result.busy_seconds, result.worker_seconds = merger.busy_seconds, merger.worker_seconds
    result.stop_signal = control.signal
    return result


def _start_workers(spec, context, start_ns, on_records, window_arrived, control,
                   processes, readers) -> None:
    for worker in range(spec.workers):
        read_fd, write_fd = os.pipe()
        try:
            # Room for whole record buffers: one write per buffer, not a loop of
            # partial writes and wake-ups in the worker.
            fcntl.fcntl(write_fd, F_SETPIPE_SZ, PIPE_SIZE_BYTES)
        except OSError:
            pass                                  # over /proc/sys/fs/pipe-max-size: keep 64 KiB
        process = context.Process(target=_worker_main, name=f"loadtester-worker-{worker}",
                                  args=(spec, worker, write_fd, start_ns, on_records is not None,
                                        os.getpid()),
                                  daemon=True)
        process.start()
        os.close(write_fd)
        processes.append(process)
        control.processes.append(process)
        readers.append(_WorkerReader(read_fd, on_records, window_arrived))


def _merge(spec: RunSpec, readers, processes, stop_reason: str | None) -> RunResult:
    counters = _engine.Counters()
    latency = _engine.Histogram()
    service = _engine.Histogram()
    starts, ends = [], []
    dropped = lag = 0
    dead_for_s = 0.0
    reasons, failures = set(), []
    error_messages: dict[str, str] = {}
    per_target = requests_per_target(spec)
    variants = array.array("q", bytes(8 * 3 * sum(per_target)))   # [responses, successes, errors]
    target_latency = None
    addresses: dict[str, list[int]] | None = None
    for worker, (reader, process) in enumerate(zip(readers, processes)):
        if reader.failure or reader.summary is None:
            # Its windows are stored, and so are its rows: count what they hold, so that the
            # summary and the stored rows agree.
            died_at = max(reader.totals.seconds, default=-1) + 1
            failures.append(reader.failure or worker_death(worker, process.exitcode, died_at))
            # Rows stored after its last window count too, so summary and rows agree.
            reader.totals.merge(aggregate.totals_of_records(reader.records_after_window))
            counters.merge(reader.totals.counters)
            latency.merge(reader.totals.latency)
            service.merge(reader.totals.service)
            if reader.totals.seconds:
                dead_for_s = float(died_at)
            continue
        summary = reader.summary
        counters.merge(_engine.Counters.from_dict(summary["counters"]))
        latency.merge(_engine.Histogram.from_bytes(summary["latency"]))
        service.merge(_engine.Histogram.from_bytes(summary["service"]))
        starts.append(summary["start_ns"])
        ends.append(summary["end_ns"])
        dropped += summary["dropped_records"]
        lag = max(lag, summary["loop_lag_max_us"])
        reasons.add(summary["stop_reason"])
        for kind, message in summary.get("error_messages", {}).items():
            error_messages.setdefault(kind, message)
        worker_counts = array.array("q")
        worker_counts.frombytes(summary["targets"])   # (native order: the worker is this machine)
        variants = array.array("q", map(operator.add, variants, worker_counts))
        for address, counts in (summary.get("addresses") or {}).items():
            addresses = addresses if addresses is not None else {}
            addresses[address] = list(map(operator.add, addresses.get(address, [0] * 4), counts))
        if summary.get("group_latency"):
            parts = [_engine.Histogram.from_bytes(blob) for blob in summary["group_latency"]]
            if target_latency is None:
                target_latency = parts
            else:
                for merged, part in zip(target_latency, parts):
                    merged.merge(part)
    targets, data_variants, at = [], array.array("q"), 0
    rendered = spec.variants.requests if spec.variants else ()
    for index, count in enumerate(per_target):
        counts = variants[3 * at:3 * (at + count)]
        targets.append([sum(counts[k::3]) for k in range(3)])
        if index < len(rendered) and rendered[index]:
            data_variants += counts
        at += count
    duration_s = (max(ends) - min(starts)) / 1e9 if starts else dead_for_s
    reason = stop_reason or ("interrupted" if "interrupted" in reasons else (
        sorted(reasons)[0] if reasons else "failed"))
    return RunResult(spec=spec, counters=counters, latency=latency, service=service,
                     duration_s=duration_s, stop_reason=reason,
                     dropped_records=dropped, max_loop_lag_us=lag, targets=targets,
                     worker_errors=failures, error_messages=error_messages,
                     variants=data_variants if spec.variants else None,
                     target_latency=target_latency, addresses=addresses)


def worker_death(worker: int, exitcode: int | None, second: int) -> str:
    """One line: which worker died, how, and when (in the run's seconds)."""
    if exitcode is not None and exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    else:
        how = f"exited with code {exitcode}"
    return (f"worker {worker} {how} in second {second + 1}; its counts up to then are "
            "included, the rest of the run went on without it")
