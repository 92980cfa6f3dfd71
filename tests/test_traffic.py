"""Realistic traffic end to end (issue 15): data rows, weights, journeys, think time and rows
per connection, against real servers on 127.0.0.1 that count or record what they were sent."""
import collections
import json
import re
import sqlite3
import threading

from conftest import blast_json, cli
from test_cli import self_signed  # noqa: F401,F811  (a fixture)

from loadtester.localtarget import fetch_stats

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def write(path, text):
    path.write_text(text)
    return path


def paths_of(target) -> dict:
    return fetch_stats(target.url, what="paths")


def write_rows(path, count):
    with open(path, "w") as out:
        out.write("id,word\n")
        out.writelines(f"{i},w {i % 97}&x\n" for i in range(count))


def test_100000_rows_each_served_once_and_per_variant_counts_match_the_target(
        start_target, db, tmp_path):
    rows = tmp_path / "users.csv"
    write_rows(rows, 100_000)
    target = start_target("--count-paths")
    report = blast_json(target.url + "item/{{id}}?q={{word}}", "--data", rows,
                        "--data-order", "sequential", "-n", "100000", "-c", "50",
                        "--store", "windows", db=db)
    assert report["requests"] == 100_000 == target.stats()["served"]
    assert report["variants"] == {"count": 100_000, "min": 1, "max": 1, "unserved": 0}
    data = report["traffic"]["data"]
    assert data["file"] == "users.csv" and data["rows"] == 100_000 and len(data["sha256"]) == 64
    served = paths_of(target)
    # the value went into the URL percent-encoded ("w 5&x" -> w%205%26x)
    assert served["/item/5?q=w%205%26x"] == 1
    exported = cli("export", report["run_id"], "--variants", "--format", "ndjson", "--db", db)
    assert exported.returncode == 0, exported.stderr
    variants = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(variants) == 100_000
    assert {v["request"].split(" ", 1)[1]: v["requests"] for v in variants} == served
    assert [v["row"] for v in variants] == list(range(1, 100_001))


def test_random_order_over_workers_matches_the_target_variant_by_variant(start_target, db,
                                                                        tmp_path):
    rows = write(tmp_path / "users.ndjson",
                 "".join(json.dumps({"id": i, "tag": f"t{i}"}) + "\n" for i in range(1000)))
    target = start_target("--count-paths")
    report = blast_json(target.url + "u/{{id}}/{{tag}}", "--data", rows, "--data-order", "random",
                        "--seed", "42", "-n", "2500", "-c", "8", "--workers", "2", db=db)
    assert report["requests"] == 2500 == target.stats()["served"]
    # two workers take alternate rows of one shuffled order: every row 2 or 3 times
    assert report["variants"]["min"] == 2 and report["variants"]["max"] == 3
    exported = cli("export", report["run_id"], "--variants", "--format", "ndjson", "--db", db)
    counts = {json.loads(line)["request"].split(" ", 1)[1]: json.loads(line)["requests"]
              for line in exported.stdout.splitlines()}
    assert counts == paths_of(target)
    again = cli("export", report["run_id"], "--variants", "--db", db).stdout.splitlines()[1:4]
    second = blast_json(target.url + "u/{{id}}/{{tag}}", "--data", rows, "--data-order", "random",
                        "--seed", "42", "-n", "10", "-c", "1", db=db)
    same_order = cli("export", second["run_id"], "--variants", "--db", db).stdout.splitlines()[1:4]
    assert [line.split(",")[:2] for line in again] == [line.split(",")[:2] for line in same_order]


def test_weights_70_25_5_are_exact_over_100000_requests(start_target, db, tmp_path):
    target = start_target("--count-paths")
    targets = write(tmp_path / "mix.txt", f"GET {target.url}browse\nweight: 70\n\n"
                                          f"GET {target.url}search\nweight: 25\n\n"
                                          f"POST {target.url}checkout\nweight: 5\n")
    report = blast_json(f"--targets={targets}", "-n", "100000", "-c", "50", "--workers", "2",
                        "--store", "none", db=db)
    served = paths_of(target)
    by_path = {t["url"].rsplit("/", 1)[1]: t for t in report["targets"]}
    for path, share in (("browse", 0.70), ("search", 0.25), ("checkout", 0.05)):
        assert abs(by_path[path]["requests"] - share * 100_000) <= 0.001 * 100_000
        assert by_path[path]["requests"] == served["/" + path]
        assert by_path[path]["weight"] == round(share * 100)
    assert report["traffic"]["weights"] == [70, 25, 5]
    no_data = cli("export", report["run_id"], "--variants", "--db", db)
    assert no_data.returncode == 2 and "was not run with --data" in no_data.stderr


class RecordingServer:
    """Answers every request with 200 and records the request lines per connection, in the
    order each connection sent them, and each connection's `Authorization` values."""

    def __init__(self, raw_server):
        self.lock = threading.Lock()
        self.lines = collections.defaultdict(list)
        self.tokens = collections.defaultdict(set)
        self.server = raw_server(self.handle)
        self.url = self.server.url

    def handle(self, conn, head):
        first = head.split(b"\r\n", 1)[0].decode()
        token = re.search(rb"(?i)\r\nauthorization: ([^\r]*)", head)
        with self.lock:
            self.lines[id(conn)].append(first.split(" ")[1])
            if token:
                self.tokens[id(conn)].add(token.group(1).decode())
        conn.sendall(OK)
        return True


def test_journey_steps_arrive_in_order_on_each_connection(raw_server, db, tmp_path):
    server = RecordingServer(raw_server)
    rows = write(tmp_path / "users.csv", "user\n" + "".join(f"u{i}\n" for i in range(10)))
    journey = write(tmp_path / "journey.txt", f"GET {server.url}login?u={{{{user}}}}\n\n"
                                              f"GET {server.url}search?u={{{{user}}}}\n\n"
                                              f"POST {server.url}cart\n@body.json\n")
    (tmp_path / "body.json").write_text('{"user": "{{user|json}}"}')
    report = blast_json(f"--journey={journey}", "--data", rows, "-n", "120", "-c", "4", db=db)
    assert report["requests"] == 120
    assert all(t["latency_ms"]["p50"] is not None for t in report["targets"])
    assert report["traffic"]["journey"][0].startswith("GET ")
    walked = list(server.lines.values())
    assert len(walked) == 4 and sum(map(len, walked)) == 120
    step_counts = [0, 0, 0]
    for lines in walked:
        for start in range(0, len(lines), 3):
            journey_lines = lines[start:start + 3]          # (the count may end one midway)
            for step, line in enumerate(journey_lines):
                assert line.split("?")[0] == ["/login", "/search", "/cart"][step], lines
                step_counts[step] += 1
            if len(journey_lines) > 1:
                # one row per journey: its steps share the user
                assert journey_lines[1] == "/search?u=" + journey_lines[0].split("=")[1]
    assert [t["requests"] for t in report["targets"]] == step_counts


def test_open_loop_starts_journeys_at_the_rate_and_each_counts_as_its_steps(raw_server, db,
                                                                           tmp_path):
    server = RecordingServer(raw_server)
    journey = write(tmp_path / "journey.txt",
                    f"GET {server.url}a\n\nGET {server.url}b\n\nGET {server.url}c\n")
    report = blast_json(f"--journey={journey}", "--rate", "50", "-d", "3s", "-c", "10", db=db)
    starts, seconds = report["targets"][0]["requests"], report["duration_s"]
    # 50 journeys a second for 3 s: their first steps are on the timetable
    assert 145 <= starts <= 151, report["targets"]
    assert report["requests"] == sum(t["requests"] for t in report["targets"])
    assert starts - 10 <= report["targets"][2]["requests"] <= starts       # (the last in flight)
    assert 2.9 <= seconds <= 3.2
    shown = cli("show", report["run_id"], "--db", db, "--no-windows").stdout
    assert "open loop at 50 journeys/s of 3 steps" in shown
    for lines in server.lines.values():
        assert lines == (["/a", "/b", "/c"] * len(lines))[:len(lines)]


def test_think_time_holds_the_request_rate_and_steps_show_latency(start_target, db, tmp_path):
    target = start_target()
    journey = write(tmp_path / "journey.txt",
                    f"GET {target.url}a\n\nGET {target.url}b\n\nGET {target.url}c\n")
    report = blast_json(f"--journey={journey}", "--think", "50ms", "-c", "10", "-d", "2s", db=db)
    # 10 users, each waiting 50 ms between its requests (none before its first, as Locust's
    # wait_time): at most 10 x (D / 50 ms + 1) in D seconds, 200 req/s in the steady state
    duration_s = report["duration_s"]
    assert report["requests"] <= 10 * (duration_s / 0.050 + 1)
    assert report["rps"] <= 200 + 10 / duration_s
    assert report["requests"] >= 300                                  # (and not far below)
    assert report["traffic"]["think_ms"] == [50.0, 50.0]
    shown = cli("show", report["run_id"], "--db", db, "--no-windows").stdout
    assert "Step 1" in shown and "Step 3" in shown and "latency p50" in shown
    assert "Think        50.00ms" in shown


def test_open_loop_takes_rows_in_turn(start_target, db, tmp_path):
    target = start_target("--count-paths")
    rows = write(tmp_path / "ids.csv", "id\n" + "".join(f"{i}\n" for i in range(100)))
    report = blast_json(target.url + "r/{{id}}", "--data", rows, "--rate", "2000", "-n", "300",
                        "-c", "10", "--workers", "2", db=db)
    assert report["mode"] == "rate" and report["requests"] == 300
    assert report["variants"] == {"count": 100, "min": 3, "max": 3, "unserved": 0}
    assert set(paths_of(target).values()) == {3}


def test_rows_pinned_per_connection(raw_server, db, tmp_path):
    server = RecordingServer(raw_server)
    rows = write(tmp_path / "tokens.csv",
                 "token\n" + "".join(f"secret-{i}\n" for i in range(5)))
    report = blast_json(server.url + "me", "-H", "Authorization: Bearer {{token}}", "--data", rows,
                        "--data-per-connection", "-c", "3", "-n", "300", "--workers", "2", db=db)
    assert report["requests"] == 300
    tokens = sorted(next(iter(t)) for t in server.tokens.values())
    assert all(len(t) == 1 for t in server.tokens.values())          # one identity each
    assert tokens == ["Bearer secret-0", "Bearer secret-1", "Bearer secret-2"]


def test_a_journey_per_connection_keeps_its_row_on_every_step(raw_server, db, tmp_path):
    server = RecordingServer(raw_server)
    rows = write(tmp_path / "tokens.csv", "token\n" + "".join(f"t{i}\n" for i in range(4)))
    journey = write(tmp_path / "journey.txt",
                    f"GET {server.url}a\nAuthorization: {{{{token}}}}\n\n"
                    f"GET {server.url}b\nAuthorization: {{{{token}}}}\n")
    report = blast_json(f"--journey={journey}", "--data", rows, "--data-per-connection",
                        "-c", "4", "-n", "80", db=db)
    assert report["requests"] == 80 and report["traffic"]["data"]["per_connection"]
    assert sorted(next(iter(t)) for t in server.tokens.values()) == ["t0", "t1", "t2", "t3"]
    for lines in server.lines.values():
        assert lines == (["/a", "/b"] * len(lines))[:len(lines)]


def test_https_data_weights_and_what_was_sent_in_show_compare_and_the_web_app(
        start_target, self_signed, db, tmp_path):  # noqa: F811
    cert, key = self_signed
    target = start_target("--tls-cert", cert, "--tls-key", key, "--count-paths")
    rows = write(tmp_path / "items.csv", "sku\n" + "".join(f"s{i}\n" for i in range(30)))
    mix = write(tmp_path / "mix.txt",
                f"GET {target.url}item/{{{{sku}}}}\nweight: 2\n\nGET {target.url}home\n")
    runs = [blast_json(f"--targets={mix}", "--data", rows, "--insecure", "-n", "90", "-c", "3",
                       db=db) for _ in range(2)]
    served = paths_of(target)
    assert served["/home"] == 60 and sum(served.values()) == 180
    assert all(served[f"/item/s{i}"] == 4 for i in range(30))        # 2 runs x 60 / 30 rows
    shown = json.loads(cli("show", runs[0]["run_id"], "--json", "--db", db).stdout)
    assert shown["traffic"]["data"]["sha256"] == runs[0]["traffic"]["data"]["sha256"]
    assert shown["traffic"]["weights"] == [2, 1]
    assert [t["requests"] for t in shown["targets"]] == [60, 30]
    assert shown["variants"] == {"count": 30, "min": 2, "max": 2, "unserved": 0}
    compared = cli("compare", runs[0]["run_id"], runs[1]["run_id"], "--db", db).stdout
    assert "Traffic      data items.csv (30 rows, sha256" in compared
    assert "weights 2/1 (both)" in compared

    from starlette.testclient import TestClient

    from loadtester.web.app import create_app
    from loadtester.web.context import ServeContext
    with TestClient(create_app(ServeContext(db_path=db))) as client:
        metrics = client.get(f"/api/metrics/{runs[0]['uuid']}").json()
    # the same traffic, but for where the data file was on the machine that ran it
    shown["traffic"]["data"].pop("path")
    assert json.dumps(shown["traffic"]) in json.dumps(metrics)
    assert str(rows) not in json.dumps(metrics)


def test_shards_take_alternate_rows_and_merge_adds_their_per_target_counts(start_target,
                                                                         tmp_path):
    from loadtester.analysis import merge

    target = start_target("--count-paths")
    rows = write(tmp_path / "ids.csv", "id\n" + "".join(f"{i}\n" for i in range(100)))
    mix = write(tmp_path / "mix.txt",
                f"GET {target.url}item/{{{{id}}}}\nweight: 3\n\nGET {target.url}home\n")
    for shard in ("0/2", "1/2"):
        blast_json(f"--targets={mix}", "--data", rows, "-n", "266", "-c", "4", "--shard", shard,
                   "--run-id", "g", db=tmp_path / f"{shard[0]}.db")
    served = paths_of(target)
    # 2 shards x 100 item requests: shard 0 takes the even rows, shard 1 the odd ones, so
    # together every row twice
    assert served["/home"] == 66 and all(served[f"/item/{i}"] == 2 for i in range(100))
    merge.merge([tmp_path / "0.db", tmp_path / "1.db"], tmp_path / "all.db")
    shown = json.loads(cli("show", "last", "--json", "--db", tmp_path / "all.db").stdout)
    assert [t["requests"] for t in shown["targets"]] == [200, 66]
    assert shown["traffic"]["weights"] == [3, 1]
    # per-target latency merges exactly: each target's histogram from both shards, added up
    from loadtester import _engine
    from loadtester.analysis.aggregate import unpack_histograms
    from loadtester.analysis.report import latency_summary_ms
    expected = [_engine.Histogram(), _engine.Histogram()]
    for shard_db in ("0.db", "1.db"):
        with sqlite3.connect(tmp_path / shard_db) as conn:
            (blob,) = conn.execute("SELECT target_latency FROM test_runs").fetchone()
        for total, part in zip(expected, unpack_histograms(blob), strict=True):
            total.merge(part)
    assert [h.total for h in expected] == [200, 66]
    assert [t["latency_ms"] for t in shown["targets"]] == \
        [json.loads(json.dumps(latency_summary_ms(h))) for h in expected]

