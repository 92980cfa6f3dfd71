"""Reports from the command line: `show RUN --html/--pdf` write the reports `serve` gives, and
`plot RUN...` draws runs on one self-contained page.

The comparison with serve is made against the web app in-process (Starlette's TestClient) on
the same database file; the PDFs are compared as text (poppler-utils' pdftotext); the plot is
opened in headless Chromium (Debian's chromium and chromium-driver: installed by `make test`;
missing, these tests fail and say so)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import TargetProcess, blast_json, cli, free_port
from loadtester import _engine
from loadtester.localtarget import fetch_stats
from loadtester.model import ERROR_KINDS
from loadtester.reports.plot import MAX_POINTS
from loadtester.store import RunWriter

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


# ---------------------------------------------------------------------------- stored runs

PLAIN = ("closed", "rate", "dead")
SHAPED = ("data", "weighted", "journey", "long", "two")
LONG_STEPS = 23                          # past the 20 rows a report lists


def _shaped_runs(db: Path, folder: Path) -> dict:
    """Shaped runs (issue 15) against the built-in target counting its paths: a --data run in
    random order, weights 70/25/5, a journey of three steps with think time, a masked journey
    of LONG_STEPS steps, and two targets of a plain targets file; and what the target was
    sent, by path."""
    rows = folder / "users.csv"
    rows.write_text("id,word\n" + "".join(f"{i},w{i}\n" for i in range(300)))
    target = TargetProcess("--count-paths")
    try:
        url = target.url
        data = blast_json(url + "item/{{id}}?q={{word}}", "--data", rows, "--data-order", "random",
                          "--seed", "42", "-n", "600", "-c", "4", db=db)
        mix = folder / "mix.txt"
        mix.write_text(f"GET {url}browse\nweight: 70\n\nGET {url}search\nweight: 25\n\n"
                       f"POST {url}checkout\nweight: 5\n")
        weighted = blast_json(f"--targets={mix}", "-n", "1000", "-c", "4", db=db)
        steps = folder / "journey.txt"
        steps.write_text(f"GET {url}login\n\nGET {url}find\n\nPOST {url}cart\n")
        journey = blast_json(f"--journey={steps}", "--think", "1ms", "-n", "300", "-c", "3", db=db)
        long_steps = folder / "long.txt"
        long_steps.write_text("\n".join(f"GET {url}s{i}\n" for i in range(1, LONG_STEPS + 1)))
        long = blast_json(f"--journey={long_steps}", "-n", str(LONG_STEPS * 10), "-c", "1",
                          "--mask-host", db=db)
        two_targets = folder / "two.txt"
        two_targets.write_text(f"GET {url}one\n\nGET {url}two\n")
        two = blast_json(f"--targets={two_targets}", "-n", "100", "-c", "2", db=db)
        served = fetch_stats(url, what="paths")
    finally:
        target.stop()
    return {"data": data, "weighted": weighted, "journey": journey, "long": long, "two": two,
            "served": served}


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """A database of real runs against the built-in target: closed loop (labelled with
    markup), open loop with a threshold it breaks, the shaped runs of _shaped_runs, and (the
    last) one against a dead port (no response at all)."""
    folder = tmp_path_factory.mktemp("reports")
    db = folder / "runs.db"
    target = TargetProcess("--delay", "1ms")
    try:
        closed = blast_json(target.url, "-c", "4", "-d", "2s", "--label", "<b>closed</b> ✓", db=db)
        rate = blast_json(target.url, "--rate", "300", "-d", "2s", "-c", "4",
                          "--threshold", "p99<0.001ms", db=db, exit_code=1)
    finally:
        target.stop()
    shaped = _shaped_runs(db, folder)
    dead = blast_json(f"http://127.0.0.1:{free_port()}/", "-n", "40", "-c", "2", db=db,
                      exit_code=1)
    return {"db": db, "closed": closed, "rate": rate, "dead": dead, **shaped}


def _serve_client(db: Path):
    from starlette.testclient import TestClient

    from loadtester.web.app import create_app
    from loadtester.web.context import ServeContext
    return TestClient(create_app(ServeContext(db_path=db)))


def _pdf_text(pdf: bytes, tmp_path: Path, name: str) -> str:
    assert shutil.which("pdftotext"), "pdftotext missing: install poppler-utils (make system-deps)"
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout


@pytest.mark.parametrize("which", PLAIN + SHAPED)
def test_show_writes_the_reports_serve_gives(stored_run, tmp_path, which):
    db, report = stored_run["db"], stored_run[which]
    html_path, pdf_path = tmp_path / "report.html", tmp_path / "report.pdf"
    result = cli("show", str(report["run_id"]), "--db", db, "--html", html_path, "--pdf", pdf_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"wrote {html_path}", f"wrote {pdf_path}"]

    with _serve_client(db) as client:
        served_html = client.get(f"/report/{report['uuid']}")
        served_pdf = client.get(f"/api/report/{report['uuid']}")
    assert served_html.status_code == 200 and served_pdf.status_code == 200
    assert html_path.read_text(encoding="utf-8") == served_html.text      # the same page
    mine = _pdf_text(pdf_path.read_bytes(), tmp_path, "mine")
    assert mine == _pdf_text(served_pdf.content, tmp_path, "served")     # the same text
    # ... and the numbers in them are the run's own
    for text in (served_html.text, mine):
        assert f"{report['requests']:,}" in text and f"{report['attempts']:,}" in text
    if which == "closed":
        assert "&lt;b&gt;closed&lt;/b&gt; ✓" in served_html.text and "<b>closed</b>" not in served_html.text


@pytest.mark.parametrize("which", ["closed", "rate", "dead"])
def test_reports_read_as_the_dashboard(stored_run, tmp_path, which):
    """Verdict, p95, units, UTC times, the errors line and 'no responses' in both reports."""
    db, report = stored_run["db"], stored_run[which]
    html_path, pdf_path = tmp_path / "report.html", tmp_path / "report.pdf"
    assert cli("show", report["uuid"][:8], "--db", db, "--html", html_path, "--pdf", pdf_path).returncode == 0
    page = html_path.read_text(encoding="utf-8")
    text = _pdf_text(pdf_path.read_bytes(), tmp_path, "r")
    flat = " ".join(text.split())
    assert "<td>p95</td>" in page and " p95 " in flat                   # latency table
    assert "Latency p95" in page and "Latency p95" in flat              # key numbers
    assert "times in UTC" in page and "Times in UTC" in flat
    started = report["started_at"][:19].replace("T", " ") + " UTC"
    assert f"started {started}" in page and f"started {started}" in flat
    assert "errors/s" in page and "errors/s" in flat                    # throughput: errors too
    assert not re.search(r"\d us\b", page + flat)                    # µs, as the dashboard
    verdict_pill = '<span class="status failed"'
    if which == "closed":
        assert verdict_pill not in page and '<span class="status neutral"' in page
        assert "No thresholds" in flat and "Failed" not in flat
        assert "no responses" not in page and "no responses" not in flat
    elif which == "rate":                                                # a broken threshold
        assert verdict_pill in page and "Failed: threshold not met: p99&lt;0.001ms" in page
        assert "Failed: threshold not met: p99<0.001ms" in flat
        assert '<td class="fail">FAIL</td>' in page and "p99<0.001ms FAIL" in flat
        assert "Uncorrected" in page
    else:                                                                # no response at all
        assert verdict_pill in page and '<span class="status completed"' not in page  # never green
        assert "Failed: no successful response: connect 40" in flat
        assert "connection refused 127.0.0.1:" in page and "connection refused 127.0.0.1:" in flat
        # the latency chart is a note, not blank axes; the throughput chart shows the errors
        assert page.count("<svg") == 2 and page.count('class="chart empty"') == 1
        assert "Latency per second (p50 / p95 / p99): no responses" in page
        assert flat.count("no responses") == 1


def _reports(stored_run, which: str, tmp_path: Path) -> tuple[str, str]:
    """(the HTML page, the PDF's text with its whitespace collapsed) of `show RUN`."""
    html_path, pdf_path = tmp_path / f"{which}.html", tmp_path / f"{which}.pdf"
    result = cli("show", str(stored_run[which]["run_id"]), "--db", stored_run["db"],
                 "--html", html_path, "--pdf", pdf_path)
    assert result.returncode == 0, result.stderr
    text = _pdf_text(pdf_path.read_bytes(), tmp_path, which)
    return html_path.read_text(encoding="utf-8"), " ".join(text.split())


def _cells(*values) -> str:
    return "".join(f"<td>{value}</td>" for value in values)


@pytest.mark.parametrize("which", PLAIN)
def test_a_plain_runs_reports_have_no_traffic_section(stored_run, tmp_path, which):
    page, flat = _reports(stored_run, which, tmp_path)
    assert "<h2>Traffic</h2>" not in page and "<h2>Targets</h2>" not in page
    assert "What was sent" not in flat and "Traffic" not in flat


def test_a_data_runs_reports_name_its_file_and_how_its_rows_were_sent(stored_run, tmp_path):
    report, served = stored_run["data"], stored_run["served"]
    items = {path: n for path, n in served.items() if path.startswith("/item/")}
    # every row twice: 600 requests over 300 rows in one shuffled order, as the target saw
    assert len(items) == 300 and set(items.values()) == {2} and report["requests"] == 600
    page, flat = _reports(stored_run, "data", tmp_path)
    sha256 = report["traffic"]["data"]["sha256"]
    assert len(sha256) == 64
    for label, text in (("Data file", "users.csv, 300 rows"), ("Data sha256", sha256),
                        ("Data order", "random, seed 42"),
                        ("Variants", "300 request variants, each sent 2 times (0 never)")):
        assert f'<tr><th scope="row">{label}</th><td>{text}</td></tr>' in page
        assert f"{label} {text}" in flat
    assert str(stored_run["db"].parent) not in page + flat        # its name, not where it was
    assert "<h2>Targets</h2>" not in page                          # one target: no table


def test_a_weighted_runs_reports_give_each_targets_weight_and_count(stored_run, tmp_path):
    report, served = stored_run["weighted"], stored_run["served"]
    url = report["url"].rsplit("/", 1)[0] + "/"
    page, flat = _reports(stored_run, "weighted", tmp_path)
    assert "<h2>Traffic</h2>" in page and "<h2>Targets</h2>" in page
    by_path = {t["url"].rsplit("/", 1)[1]: t for t in report["targets"]}
    for index, (method, path, weight, share) in enumerate(
            (("GET", "browse", 70, "70.00%"), ("GET", "search", 25, "25.00%"),
             ("POST", "checkout", 5, "5.00%")), 1):
        requests = served["/" + path]                       # the target's own count
        assert requests == by_path[path]["requests"] == weight * 10
        asked = f"Weight {weight} ({weight:.1f}%)"
        assert f'<th scope="row">{asked}</th><td>{method} {url}{path}</td>' in page
        assert f"{asked} {method} {url}{path}" in flat
        p50 = by_path[path]["latency_ms"]["p50"]
        assert p50 is not None
        row = [f"{index}. {method} {url}{path}", str(weight), f"{requests:,}", share, "0"]
        assert "<tr>" + _cells(*row) in page and " ".join(row) + " " in flat
    assert page.index("<h2>Traffic</h2>") < page.index("<h2>Targets</h2>") < page.index("<h2>Per second")


def test_a_journeys_reports_list_its_steps_in_order_with_their_counts(stored_run, tmp_path):
    report, served = stored_run["journey"], stored_run["served"]
    url = report["url"].rsplit("/", 1)[0] + "/"
    page, flat = _reports(stored_run, "journey", tmp_path)
    assert "<h2>Journey steps</h2>" in page and "Journey steps Step Requests Share Errors" in flat
    think = "1.00 ms before each request of a connection but its first"
    assert f"<td>{think}</td>" in page and f"Think time {think}" in flat
    steps = [("GET", "login"), ("GET", "find"), ("POST", "cart")]
    assert sum(served["/" + path] for _, path in steps) == report["requests"] == 300
    for index, (method, path) in enumerate(steps, 1):
        step = f"Step {index} {method} {url}{path}"
        assert f'<th scope="row">Step {index}</th><td>{method} {url}{path}</td>' in page
        assert step in flat
        requests = served["/" + path]
        share = f"{requests / report['attempts'] * 100:.2f}%"
        row = [f"{index}. {method} {url}{path}", f"{requests:,}", share, "0"]
        assert "<tr>" + _cells(*row) in page and " ".join(row) + " " in flat
    # in the order they were walked
    positions = [page.index(f"<td>{i}. ") for i in (1, 2, 3)]
    assert positions == sorted(positions)
    assert flat.index("Step 1 GET") < flat.index("Step 2 GET") < flat.index("Step 3 POST")


def test_a_plain_targets_file_gets_the_targets_table_and_no_traffic_section(stored_run, tmp_path):
    report, served = stored_run["two"], stored_run["served"]
    url = report["url"].rsplit("/", 1)[0] + "/"
    page, flat = _reports(stored_run, "two", tmp_path)
    assert "<h2>Traffic</h2>" not in page and "What was sent" not in flat
    # no weights, and no latency per target was measured: no columns of dashes
    assert "<tr><th>Target</th><th>Requests</th><th>Share</th><th>Errors</th></tr>" in page
    assert "Targets Target Requests Share Errors 1." in flat
    for index, path in enumerate(("one", "two"), 1):
        requests = served["/" + path]
        assert requests == report["targets"][index - 1]["requests"]
        row = [f"{index}. GET {url}{path}", f"{requests:,}", f"{requests / 100 * 100:.2f}%", "0"]
        assert "<tr>" + _cells(*row) + "</tr>" in page and " ".join(row) in flat


def test_a_long_masked_journey_lists_twenty_steps_and_where_the_rest_are(stored_run, tmp_path):
    report = stored_run["long"]
    page, flat = _reports(stored_run, "long", tmp_path)
    hidden = LONG_STEPS - 20
    run_id = report["run_id"]
    more = f"and {hidden} more (all of them: loadtester show {run_id})"
    assert f"<td>\u2026 {more}</td>" in page and f"... {more}" in flat
    assert f"The 20 most sent of {LONG_STEPS}: \u2026 {more}" in page
    assert f"The 20 most sent of {LONG_STEPS}: ... {more}" in flat
    assert page.count('<th scope="row">Step ') == 20 and "Step 21" not in page
    assert len(re.findall(r"<tr><td>\d+\. GET ", page)) == 20
    # masked (--mask-host): neither the host nor a step's path is shown
    for text in (page, flat):
        assert "127.0.0.1" not in text and "/s7" not in text and "/***" in text


def test_html_report_fits_a_phone_and_has_a_dark_mode(stored_run, tmp_path, browser):
    for which in PLAIN + SHAPED:
        out = tmp_path / f"{which}.html"
        assert cli("show", str(stored_run[which]["run_id"]), "--db", stored_run["db"], "--html", out).returncode == 0
        browser.set_window_size(390, 844)
        browser.get(out.as_uri())
        width, scroll, wider = browser.execute_script(
            "const w = document.documentElement.clientWidth;"
            "return [w, document.documentElement.scrollWidth,"
            " [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 0.5)"
            "   .map(e => e.tagName + '.' + e.className.baseVal + e.className).slice(0, 5)]")
        assert width == 390 and scroll <= 390 and wider == [], (which, scroll, wider)
        assert _console_errors(browser) == []
        background = "return getComputedStyle(document.body).backgroundColor"
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": "light"}]})
        assert browser.execute_script(background) == "rgb(249, 250, 251)"
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        assert browser.execute_script(background) == "rgb(11, 16, 32)"
        browser.save_screenshot(str(tmp_path / f"{which}-phone-dark.png"))
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_show_json_still_prints_with_html(stored_run, tmp_path):
    out = tmp_path / "r.html"
    result = cli("show", "last", "--db", stored_run["db"], "--html", out, "--json")
    assert result.returncode == 0, result.stderr
    first, rest = result.stdout.split("\n", 1)
    assert first == f"wrote {out}" and json.loads(rest)["uuid"] == stored_run["dead"]["uuid"]


# ---------------------------------------------------------------------------- plot in a browser

def _require_browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.exists() and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(f"needs {' and '.join(missing)}: install the Debian packages chromium and "
                    "chromium-driver (`make test` does)", pytrace=False)


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium at a phone's width by default; no network use is possible from a
    file:// page whose CSP forbids it, and none is expected."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--hide-scrollbars",
                "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def _console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def test_plot_draws_every_run_in_chromium(stored_run, tmp_path, browser):
    db = stored_run["db"]
    ids = [str(stored_run[k]["run_id"]) for k in ("closed", "rate", "dead")]
    out = tmp_path / "plot.html"
    result = cli("plot", *ids, "--db", db, "-o", out)
    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    assert "http://" not in page.replace(stored_run["closed"]["url"], "") \
        .replace(stored_run["dead"]["url"], "").replace("http://www.w3.org", "")
    assert "<script src" not in page and "<link" not in page           # self-contained

    browser.set_window_size(1280, 1000)
    browser.get(out.as_uri())
    drawn = browser.execute_script(
        "const p = window.loadtesterPlot; if (!p) return null;"
        "return {runs: p.runs, charts: p.charts.map(c => ({title: c.root.querySelector('.u-title').textContent,"
        " series: c.series.slice(1).map((s, i) => ({label: s.label,"
        "   points: c.data[i + 1].filter(v => v !== null).length})),"
        " width: c.root.querySelector('canvas').width}))}")
    assert _console_errors(browser) == []
    assert drawn is not None, "the page's script did not run"
    names = [f"run {stored_run['closed']['run_id']} <b>closed</b> ✓",
             f"run {stored_run['rate']['run_id']}", f"run {stored_run['dead']['run_id']}"]
    assert drawn["runs"] == names
    charts = {c["title"].split(" (")[0]: c for c in drawn["charts"]}
    assert set(charts) == {"Latency over time", "Throughput over time", "Latency by percentile"}
    assert all(c["width"] > 200 for c in charts.values())
    # every run in the throughput chart (responses and errors), a point per stored second
    assert [s["label"] for s in charts["Throughput over time"]["series"]] == \
        [label for name in names for label in (name, f"{name} errors")]
    throughput = [s["points"] for s in charts["Throughput over time"]["series"]]
    assert throughput[0] >= 2 and throughput[2] >= 2 and throughput[4] >= 1 and throughput[5] >= 1
    # latency: the runs that had responses (the dead port had none), p99 and p50 each
    latency = {s["label"]: s["points"] for s in charts["Latency over time"]["series"]}
    assert latency[f"{names[0]} p99"] >= 2 and latency[f"{names[1]} p50"] >= 2
    assert latency[f"{names[2]} p99"] == 0
    curve = {s["label"]: s["points"] for s in charts["Latency by percentile"]["series"]}
    assert curve[names[0]] > 20 and curve[names[1]] > 20 and curve[names[2]] == 0
    assert "40 requests" in browser.find_elements("css selector", ".runs li")[2].text
    # legends always on (no hover needed): each series' last/min/max, "-" where it has none
    legends = browser.execute_script(
        "return [...document.querySelectorAll('.chart')].map(c => [...c.querySelectorAll('table.legend tr')]"
        ".map(r => [...r.cells].map(td => td.textContent)))")
    latency_legend, throughput_legend, curve_legend = legends
    assert latency_legend[0] == ["", "last", "min", "max"] and curve_legend[0] == ["", "min", "max"]
    assert [row[0] for row in throughput_legend[1:]] == [s["label"] for s in charts["Throughput over time"]["series"]]
    closed_p99 = latency_legend[1]
    assert closed_p99[0] == f"{names[0]} p99" and all(re.fullmatch(r"[\d.,]+ (µs|ms|s)", v) for v in closed_p99[1:])
    assert latency_legend[5][1:] == ["-", "-", "-"]                        # the dead port: no latency
    assert all(re.fullmatch(r"[\d.,]+", v) for v in throughput_legend[1][1:])
    assert "--" not in browser.find_element("css selector", "main").text


# ---------------------------------------------------------------------------- in-process runs

def test_report_numbers_are_formatted_as_the_dashboard_shows_them():
    from loadtester.reports.content import fmt_ms
    from loadtester.units import format_utc
    assert (fmt_ms(0.5), fmt_ms(12.345), fmt_ms(1234.5), fmt_ms(None)) == ("500 µs", "12.35 ms", "1.23 s", "-")
    assert format_utc("2026-12-01T10:34:17.977Z") == "2026-12-01 10:34:17 UTC"
    assert format_utc("2026-12-01T11:34:17+01:00") == "2026-12-01 10:34:17 UTC" and format_utc(None) == "-"


def _window(second: int, worker: int, latency_us: int) -> dict:
    hist = _engine.Histogram()
    for _ in range(10):
        hist.record_value(latency_us)
    return {"second": second, "worker": worker, "latency": hist.to_bytes(), "service": hist.to_bytes(),
            "counters": {"responses": 10, "successes": 10, "bytes": 1000, "errors": [0] * len(ERROR_KINDS),
                         "status": {200: 10}, "max_wait_us": 0},
            "loop_lag_us": 0, "in_flight": 1, "partial": False}


def _write_run(db: Path, seconds: int) -> str:
    """A finished run of `seconds` seconds (one worker, 10 responses a second, latency
    growing by 1 us a second); returns its uuid."""
    writer = RunWriter(db, store_mode="windows")
    writer.begin({"url": "http://127.0.0.1:9/", "host": "127.0.0.1", "method": "GET",
                  "mode": "closed", "total_users": 1, "workers": 1, "duration": float(seconds)})
    for second in range(seconds):
        writer.submit_window(_window(second, 0, 1000 + second))
    writer.finish({"total_requests": 10 * seconds, "success_count": 10 * seconds, "error_count": 0,
                   "rps": 10.0, "avg_latency": 1.0, "p99": 1.0, "measured_duration": float(seconds),
                   "stop_reason": "duration"})
    return writer.uuid


def test_plot_of_a_long_run_stays_small(tmp_path):
    db = tmp_path / "long.db"
    _write_run(db, 3 * MAX_POINTS + 7)
    short = _write_run(db, 3)
    out = tmp_path / "plot.html"
    result = cli("plot", "1", short[:8], "--db", db, "-o", out)
    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    data = json.loads(page.split('<script id="plot-data" type="application/json">')[1]
                      .split("</script>")[0])
    long_run, short_run = data
    seconds = 3 * MAX_POINTS + 7
    assert long_run["bucket_s"] == 4 and len(long_run["points"]) == -(-seconds // 4) <= MAX_POINTS
    assert long_run["points"][-1]["t"] == seconds                     # the last bucket is shorter
    widths = [b["t"] - a["t"] for a, b in zip([{"t": 0}] + long_run["points"], long_run["points"])]
    assert sum(p["rps"] * w for p, w in zip(long_run["points"], widths)) == pytest.approx(10 * seconds)
    assert short_run["bucket_s"] == 1 and len(short_run["points"]) == 3
    assert long_run["curve"][-1][1] == pytest.approx((1000 + 3 * MAX_POINTS + 6) / 1000, rel=0.01)
    assert len(page) < 250_000, len(page)
    to_stdout = cli("plot", short[:8], "--db", db)                    # no -o: the page on stdout
    assert to_stdout.returncode == 0 and to_stdout.stdout.startswith("<!doctype html>")


def test_plot_and_show_refuse_bad_input_in_one_line(tmp_path):
    db = tmp_path / "runs.db"
    _write_run(db, 2)
    for args, code, message in (
            (("plot", "--db", db), 2, "loadtester: error: Missing argument 'RUNS...'."),
            (("plot", "1", "7", "--db", db), 1,
             "loadtester: no run '7' (use an id, a uuid prefix, 'last' or 'last~1')"),
            (("show", "7", "--db", db, "--html", tmp_path / "x.html"), 1,
             "loadtester: no run '7' (use an id, a uuid prefix, 'last' or 'last~1')"),
            (("plot", "1", "--db", db, "-o", tmp_path / "missing" / "p.html"), 1,
             f"loadtester: cannot write {tmp_path / 'missing' / 'p.html'}: No such file or directory"),
            (("show", "1", "--db", db, "--pdf", tmp_path / "missing" / "r.pdf"), 1,
             f"loadtester: cannot write {tmp_path / 'missing' / 'r.pdf'}: No such file or directory"),
            (("plot", "1", "--db", tmp_path / "none.db"), 1,
             f"loadtester: no database at {tmp_path / 'none.db'}: run `loadtester blast` first")):
        result = cli(*args)
        assert (result.returncode, result.stderr.strip()) == (code, message), args
        assert result.stdout == ""
    assert not (tmp_path / "x.html").exists()


def test_plot_of_runs_without_per_second_data_says_so_and_writes_nothing(tmp_path):
    db = tmp_path / "runs.db"
    target = TargetProcess()
    try:
        unstored = [blast_json(target.url, "-n", "200", "-c", "2", "--store", "none", db=db)
                    for _ in range(2)]
        stored = blast_json(target.url, "-n", "200", "-c", "2", "--store", "windows", db=db)
        assert target.stats()["served"] == 600
    finally:
        target.stop()
    first, second = (str(r["run_id"]) for r in unstored)
    empty = _write_run(db, 0)                   # stored with windows, but never a second
    empty_id = str(stored["run_id"] + 1)
    out = tmp_path / "plot.html"
    for runs, message in (
            ([first], f"run {first} stored no per-second data (--store none): nothing to plot"),
            ([first, second], f"runs {first} and {second} stored no per-second data "
                              "(--store none): nothing to plot"),
            ([empty[:8]], f"run {empty_id} stored no per-second data: nothing to plot"),
            ([first, empty_id], f"runs {first} and {empty_id} stored no per-second data "
                                f"(run {first}: --store none): nothing to plot")):
        for output in (("-o", out), ()):               # to a file, and to stdout
            result = cli("plot", *runs, "--db", db, *output)
            assert (result.returncode, result.stderr, result.stdout) == (
                1, f"loadtester: {message}\n", ""), (runs, output)
            assert not out.exists() and not list(tmp_path.glob(".plot.html.*"))

    # some have data: those are plotted, the others named in one warning
    result = cli("plot", first, str(stored["run_id"]), second, "--db", db, "-o", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {out}\n"
    assert result.stderr == (f"loadtester: warning: runs {first} and {second} stored no "
                             "per-second data (--store none): left out of the plot\n")
    page = out.read_text(encoding="utf-8")
    data = json.loads(page.split('<script id="plot-data" type="application/json">')[1]
                      .split("</script>")[0])
    assert [run["name"] for run in data] == [f"run {stored['run_id']}"]
    # its points are its own: 200 responses over seconds of one point each
    assert data[0]["bucket_s"] == 1 and data[0]["requests"] == 200
    assert sum(p["rps"] for p in data[0]["points"]) == pytest.approx(200)


def test_the_pdf_prints_a_label_in_any_script_dejavu_covers(stored_run, tmp_path):
    # DejaVu Sans (fonts-dejavu-core, installed by `make system-deps` and the image): the
    # closed run's label '<b>closed</b> ✓' prints as written, not as '?'.
    from loadtester.reports import pdfreport
    assert pdfreport.UNICODE, ("DejaVu Sans missing under /usr/share/fonts/truetype/dejavu: "
                               "install fonts-dejavu-core (make system-deps)")
    pdf_path = tmp_path / "closed.pdf"
    done = cli("show", stored_run["closed"]["uuid"], "--db", stored_run["db"], "--pdf", pdf_path)
    assert done.returncode == 0, done.stderr
    text = _pdf_text(pdf_path.read_bytes(), tmp_path, "closed")
    assert "<b>closed</b> ✓" in text
