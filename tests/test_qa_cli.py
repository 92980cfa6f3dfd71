"""What a new user trips on (the QA pass over realistic traffic, reports and HTTPS): each test is
one problem found, against real servers on 127.0.0.1 and a real SQLite file."""
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

from conftest import children_of, cli, kill_if_alive, self_signed_cert, wait_for

from loadtester import store
from loadtester.localtarget import fetch_stats


def one_line_error(result, code=2):
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr.strip()


def test_unwritable_sslkeylogfile_is_refused_before_the_run(start_target, db, tmp_path):
    # Before: the worker died opening it, a "failed" run was stored, nothing said why on stderr.
    cert, key = self_signed_cert(tmp_path)
    target = start_target("--tls-cert", cert, "--tls-key", key)
    for path in (tmp_path / "no-such-dir" / "keys.log", tmp_path):
        result = cli("blast", target.url, "--insecure", "-n", "5", "-c", "1", "--db", db,
                     env={"SSLKEYLOGFILE": str(path)})
        message = one_line_error(result)
        assert "SSLKEYLOGFILE" in message and str(path) in message, message
    assert target.stats()["served"] == 0
    assert not db.exists() or not store.list_runs(store.open_database(db))
    # a writable one still gets the secrets
    keys = tmp_path / "keys.log"
    result = cli("blast", target.url, "--insecure", "-n", "5", "-c", "1", "--db", db,
                 env={"SSLKEYLOGFILE": str(keys)})
    assert result.returncode == 0, result.stderr
    assert "CLIENT_TRAFFIC_SECRET_0" in keys.read_text()


def test_a_bad_think_time_is_named_as_typed(db):
    # Before: '-5ms' and '1s-' said "invalid think time ''", naming nothing the user typed.
    for typed in ("-5ms", "1s-", "-1ms-5ms", "abc"):
        message = one_line_error(cli("blast", "http://127.0.0.1:9/", f"--think={typed}",
                                     "-n", "1", "--db", db))
        assert f"invalid think time {typed!r}" in message, message


def test_merged_data_shards_keep_their_per_variant_counts(start_target, tmp_path):
    # Before: the merged run had no variant counts: `export --variants` printed a header and
    # exit 0, and `show` lost the "each variant served" line.  (With {{uuid}}, shards drew
    # their own seeds, so their variants differed and could not be added up.)
    rows = tmp_path / "ids.csv"
    rows.write_text("id\n" + "".join(f"{i}\n" for i in range(1, 11)))
    target = start_target("--count-paths")
    parts = []
    for shard in ("0/2", "1/2"):
        part = tmp_path / f"shard{shard[0]}.db"
        result = cli("blast", target.url + "v/{{id}}/{{uuid}}", "--data", rows, "-n", "10", "-c", "4",
                     "--shard", shard, "--run-id", "qa", "--db", part)
        assert result.returncode == 0, result.stderr
        parts.append(part)
    merged = tmp_path / "all.db"
    assert cli("merge", *parts, "--into", merged).returncode == 0
    exported = cli("export", "last", "--variants", "--format", "ndjson", "--db", merged)
    assert exported.returncode == 0, exported.stderr
    variants = [json.loads(line) for line in exported.stdout.splitlines()]
    served = {path: count for path, count in fetch_stats(target.url, what="paths").items()
              if path.startswith("/v/")}
    assert len(variants) == 10 and len(served) == 10
    assert {v["request"].split(" ", 1)[1]: v["requests"] for v in variants} == served
    shown = cli("show", "last", "--json", "--db", merged)
    assert json.loads(shown.stdout)["variants"] == {"count": 10, "min": 1, "max": 1,
                                                    "unserved": 0}


def test_export_variants_of_a_data_run_without_counts_says_so(start_target, db, tmp_path):
    # Before: a running --data run exported an empty table with exit 0.
    rows = tmp_path / "ids.csv"
    rows.write_text("id\n1\n2\n")
    target = start_target()
    blast = subprocess.Popen([sys.executable, "-m", "loadtester", "blast", target.url + "{{id}}",
                              "--data", rows, "-d", "4s", "-c", "1", "--db", db],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: db.exists() and cli("show", "last", "--db", db).returncode == 0)
        message = one_line_error(cli("export", "last", "--variants", "--db", db), code=1)
        assert "still running" in message, message
    finally:
        blast.wait(timeout=30)


def test_random_order_over_shards_without_seed_sends_each_row_once(start_target, tmp_path):
    # Before: each shard drew its own seed, so with -n = rows some rows went twice and others
    # never, silently (README: shards interleave the rows, each sent exactly once).
    rows = tmp_path / "ids.csv"
    rows.write_text("id\n" + "".join(f"{i}\n" for i in range(1, 41)))
    target = start_target("--count-paths")
    for shard in ("0/2", "1/2"):
        result = cli("blast", target.url + "r/{{id}}", "--data", rows, "--data-order", "random",
                     "-n", "40", "-c", "2", "--shard", shard, "--run-id", "qa-shuffle",
                     "--db", tmp_path / f"shard{shard[0]}.db")
        assert result.returncode == 0, result.stderr
    served = fetch_stats(target.url, what="paths")
    assert served == {f"/r/{i}": 1 for i in range(1, 41)}
    message = one_line_error(cli("blast", target.url + "r/{{id}}", "--data", rows,
                                 "--data-order", "random", "-n", "40", "--shard", "0/2",
                                 "--db", tmp_path / "x.db"))
    assert "--seed or --run-id" in message, message


def test_per_variant_counts_of_a_run_whose_worker_died_say_what_they_leave_out(start_target, db,
                                                                              tmp_path):
    # Before: "Requests 255,195" above "Target ...: 208,672 requests" and "(5 never)" for rows
    # the dead worker did send, with nothing to say why the counts disagree.
    rows = tmp_path / "ids.csv"
    rows.write_text("id\n" + "".join(f"{i}\n" for i in range(1, 11)))
    target = start_target()
    proc = subprocess.Popen([sys.executable, "-m", "loadtester", "blast", target.url + "{{id}}",
                             "--data", rows, "-c", "2", "--workers", "2", "-d", "4s",
                             "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert wait_for(lambda: len(children_of(proc.pid)) >= 2, timeout_s=20)
        time.sleep(1.5)
        os.kill(sorted(children_of(proc.pid))[-1], signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        kill_if_alive([proc.pid])
    report = json.loads(cli("show", "last", "--json", "--db", db).stdout)
    assert report["worker_errors"]
    left_out = report["attempts"] - report["targets"][0]["requests"]
    assert left_out > 0
    exported = cli("export", "last", "--variants", "--format", "ndjson", "--db", db).stdout
    assert sum(json.loads(line)["requests"] for line in exported.splitlines()) + left_out \
        == report["attempts"]
    note = (f"(the counts per target and variant leave out {left_out:,} requests of the worker "
            "that died)")
    assert note in out
    assert note in cli("show", "last", "--db", db).stdout


def test_output_to_a_pipe_or_dev_stdout_is_written_into_it(start_target, db, tmp_path):
    # Before: -o PIPE renamed a temporary file over the pipe (the reader got nothing, a regular
    # file took its place; as root, -o /dev/stdout replaced /dev/stdout itself), and
    # "wrote /dev/stdout" was appended to the page.
    target = start_target()
    assert cli("blast", target.url, "-n", "20", "-c", "2", "--db", db).returncode == 0
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.update(text=fifo.read_text()))
    reader.start()
    result = cli("export", "last", "--db", db, "-o", fifo)
    reader.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert got["text"].startswith("second,requests,")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    page = cli("plot", "last", "--db", db, "-o", "/dev/stdout")
    assert page.returncode == 0, page.stderr
    assert page.stdout.rstrip().endswith("</html>"), page.stdout[-80:]
    pdf = subprocess.run([sys.executable, "-m", "loadtester", "show", "last", "--db", str(db),
                          "--pdf", "/dev/stdout"], capture_output=True)
    assert pdf.returncode == 0 and pdf.stdout.startswith(b"%PDF") and b"wrote" not in pdf.stdout
    assert os.path.islink("/dev/stdout")


def test_target_refuses_what_it_cannot_serve_with_one_line(tmp_path):
    # Before: '--lifetime 0s' served forever, '--tls-key' alone served plain HTTP, and a
    # certificate without its key said "cannot use the TLS certificate: None" (exit 1).
    cert, key = self_signed_cert(tmp_path)
    other_cert, _ = self_signed_cert(tmp_path, name="other")
    for args, expected in (
            (["--lifetime", "0s"], "'--lifetime': must be more than 0"),
            (["--tls-key", key], "'--tls-key': needs --tls-cert"),
            (["--tls-cert", cert], f"could be read from {cert} (without --tls-key"),
            (["--tls-cert", other_cert, "--tls-key", key], "the key does not match")):
        message = one_line_error(cli("target", "--port", "0", *args, timeout=20))
        assert expected in message, message


def test_the_report_summary_of_a_count_run_says_how_many_requests(start_target, db, tmp_path):
    # Before: a run of -n N (no planned duration) read "... virtual users for ? - ..." in the
    # HTML report, the PDF and the web history.
    from loadtester.reports.display import summary_line
    assert summary_line("h", 2, None, 1.0, 5.0, 1.0, requests=1000).startswith(
        "Tested h with 2 virtual users for 1,000 requests - ")
    target = start_target()
    assert cli("blast", target.url, "-n", "20", "-c", "2", "--db", db).returncode == 0
    page = tmp_path / "r.html"
    assert cli("show", "last", "--db", db, "--html", page).returncode == 0
    assert "Tested 127.0.0.1 with 2 virtual users for 20 requests - " in page.read_text()
    from loadtester.web.api import history_entry, status_payload
    row = store.find_run(store.open_database(db), "last")
    for payload in (history_entry(row, None), status_payload(row, None, None)):
        assert " virtual users for 20 requests - " in payload["summary"], payload["summary"]


def test_export_of_rows_a_run_did_not_store_says_so(start_target, db):
    # Before: `export` of a --store none run wrote nothing at all (not even a header) and
    # `export --requests` of a --store windows run only the header, both with exit 0.
    target = start_target()
    for mode in ("none", "windows"):
        assert cli("blast", target.url, "-n", "5", "-c", "1", "--store", mode,
                   "--db", db).returncode == 0
        message = one_line_error(cli("export", "last", "--requests", "--db", db), code=1)
        assert f"stored with --store {mode}: it has no request rows" in message, message
    assert cli("export", "last", "--db", db).stdout.startswith("second,requests,")
    message = one_line_error(cli("export", "last~1", "--db", db), code=1)
    assert "stored with --store none: it has no per-second rows" in message, message
