"""Today's features under saturation: the target and the generator pinned to separate cores
(taskset), where writers starve and timers run late. Counts are judged against the target's own
count and the stored rows, never against the clock."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, self_signed_cert
from loadtester.localtarget import fetch_stats

pytestmark = pytest.mark.slow


@pytest.fixture
def pinned_target(start_target):
    """start(*args): the built-in target, pinned to core 0 once it listens."""
    assert shutil.which("taskset"), "these tests need taskset (util-linux)"
    assert (os.cpu_count() or 1) >= 2, "these tests pin two cores"

    def start(*args):
        target = start_target(*args)
        subprocess.run(["taskset", "-a", "-p", "-c", "0", str(target.proc.pid)], check=True,
                       capture_output=True)
        return target
    return start


def pinned_blast(url, *args, db, exit_code=0):
    """`loadtester blast --json` pinned to core 1 (workers included)."""
    done = subprocess.run(["taskset", "-c", "1", sys.executable, "-m", "loadtester", "blast", url,
                           "--json", "--db", str(db), "--no-progress", *map(str, args)],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == exit_code, done.stderr
    return json.loads(done.stdout)


def stored_request_rows(db, run_id) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "loadtester", "export", str(run_id), "--requests",
                           "--format", "ndjson", "--db", str(db)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_https_data_run_pinned_is_exact_per_variant_and_every_row_stored(pinned_target,
                                                                        tmp_path, db):
    cert, key = self_signed_cert(tmp_path, name="target")
    target = pinned_target("--tls-cert", cert, "--tls-key", key, "--count-paths")
    rows = tmp_path / "rows.csv"
    rows.write_text("id\n" + "".join(f"{i}\n" for i in range(1000)))
    report = pinned_blast(target.url + "item/{{id}}", "--data", rows, "-n", "30000", "-c", "100",
                          "--insecure", "--store", "requests", db=db)
    assert report["requests"] == 30000 == target.stats()["served"]
    assert report["errors"] == 0 and report["dropped_records"] == 0
    served = fetch_stats(target.url, what="paths")
    assert served == {f"/item/{i}": 30 for i in range(1000)}
    stored = stored_request_rows(db, report["run_id"])
    assert len(stored) == 30000
    assert sum(1 for r in stored if r["status_code"] == 200 and r["success"]) == 30000


def test_open_loop_https_pinned_sends_exactly_n(pinned_target, tmp_path, db):
    # Late timers on a saturated core must not lose requests of a count (-n with --rate).
    cert, key = self_signed_cert(tmp_path, name="target")
    target = pinned_target("--tls-cert", cert, "--tls-key", key)
    report = pinned_blast(target.url, "--rate", "4000", "-n", "8000", "-c", "50", "--insecure",
                          db=db)
    assert report["requests"] == 8000 == target.stats()["served"]
    assert report["errors"] == 0 and report["mode"] == "rate"


def test_journey_with_think_pinned_keeps_step_order_counts(pinned_target, tmp_path, db):
    target = pinned_target("--count-paths")
    journey = tmp_path / "journey.txt"
    journey.write_text(f"GET {target.url}login\n\nGET {target.url}browse\n\n"
                       f"GET {target.url}checkout\n")
    report = pinned_blast(f"--journey={journey}", "-n", "3000", "-c", "30", "--think", "1ms",
                          db=db)
    assert report["requests"] == 3000 == target.stats()["served"]
    # Each of the 30 connections walks login -> browse -> checkout; where -n cuts, a
    # connection may be inside a journey: never a later step without its earlier ones.
    paths = fetch_stats(target.url, what="paths")
    assert sum(paths.values()) == 3000
    assert paths["/login"] >= paths["/browse"] >= paths["/checkout"] >= paths["/login"] - 30
    steps = {t["url"].rsplit("/", 1)[1]: t["requests"] for t in report["targets"]}
    assert steps == {name.strip("/"): count for name, count in paths.items()}
