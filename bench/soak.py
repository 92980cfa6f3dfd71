"""Soak check: memory and WAL stay bounded however long a blast runs.

Runs `loadtester blast` (store=requests) against the local target for each duration
given (default 10 s and 60 s), sampling twice a second the RSS of the blast process
and its worker(s) and the size of the database's -wal file. Prints peak values per
run; RSS should not grow with the run's length. Load goes only to 127.0.0.1.

    .venv/bin/python bench/soak.py [--durations 10,60] [--connections 50]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOADTESTER = [sys.executable, "-m", "loadtester"]


def rss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) if match else 0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def start_target(lifetime_s: float):
    proc = subprocess.Popen([*LOADTESTER, "target", "--port", "0", "--lifetime", f"{lifetime_s}s"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not match:
        proc.kill()
        raise SystemExit(f"target did not start: {line!r}")
    return proc, f"http://127.0.0.1:{match.group(1)}/"


def soak(url: str, duration_s: int, connections: int, db: Path) -> dict:
    blast = subprocess.Popen([*LOADTESTER, "blast", url, "-c", str(connections), "-d",
                              f"{duration_s}s", "--json", "--no-progress", "--db", str(db)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wal = Path(str(db) + "-wal")
    samples = []
    while blast.poll() is None:
        main = rss_kib(blast.pid)
        workers = sum(rss_kib(child) for child in children(blast.pid))
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        samples.append((time.monotonic(), main, workers, wal_bytes))
        time.sleep(0.5)
    out, err = blast.communicate()
    if blast.returncode != 0:
        raise SystemExit(f"blast failed: {err.strip()}")
    report = json.loads(out)
    steady = [s for s in samples if s[2]]           # while the worker was alive
    half = len(steady) // 2
    return {
        "duration_s": duration_s,
        "requests": report["requests"],
        "rps": round(report["rps"]),
        "dropped_records": report["dropped_records"],
        "peak_main_rss_mib": round(max(s[1] for s in samples) / 1024, 1),
        "peak_worker_rss_mib": round(max(s[2] for s in steady) / 1024, 1) if steady else None,
        "worker_rss_first_half_mib": round(max(s[2] for s in steady[:half]) / 1024, 1)
        if half else None,
        "worker_rss_second_half_mib": round(max(s[2] for s in steady[half:]) / 1024, 1)
        if half else None,
        "peak_wal_mib": round(max(s[3] for s in samples) / 2**20, 2),
        "db_mib": round(db.stat().st_size / 2**20, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", default="10,60")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    durations = [int(d) for d in args.durations.split(",")]
    target, url = start_target(sum(durations) + 60)
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for duration in durations:
                results.append(soak(url, duration, args.connections,
                                    Path(tmp) / f"soak-{duration}.db"))
                print(json.dumps(results[-1]), flush=True)
    finally:
        target.terminate()
        target.wait(10)
    print(f"{'run':>6} {'requests':>10} {'main MiB':>9} {'worker MiB':>11} "
          f"{'(1st/2nd half)':>15} {'WAL peak MiB':>13}")
    for r in results:
        print(f"{r['duration_s']:>5}s {r['requests']:>10,} {r['peak_main_rss_mib']:>9} "
              f"{r['peak_worker_rss_mib']:>11} "
              f"{str(r['worker_rss_first_half_mib']) + '/' + str(r['worker_rss_second_half_mib']):>15}"
              f" {r['peak_wal_mib']:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
