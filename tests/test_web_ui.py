"""The web app as a product, in headless Chromium at 1440x900 and 390x844: verdicts that read
right, a settings panel, actions (run again, compare, export, copy link, delete), live cards
that agree with the charts, charts with legends, crosshair and zoom, history search and sort,
the compare page, and phones.

One real `loadtester serve` (its own SQLite file) and one real `loadtester target` for the
module; every run is a real blast the web app starts against 127.0.0.1.  Screenshots go to
tests/artifacts/ (git-ignored)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from browserkit import (
    DESKTOP, PHONE, Server, browser, js_errors, require_browser, screenshot, set_viewport, wait,
)
from conftest import TargetProcess, free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    require_browser()
    tmp_path = tmp_path_factory.mktemp("web-ui")
    target = TargetProcess("--delay", "2ms")
    server = Server(tmp_path)
    driver = browser(tmp_path, DESKTOP)
    set_viewport(driver, DESKTOP)
    try:
        yield server, target, driver
    except BaseException:
        print("---- server log ----\n" + server.log_text())
        raise
    finally:
        try:
            errors = js_errors(driver)
        finally:
            driver.quit()
            server.stop()
            target.stop()
        assert not errors, errors


def by_id(driver, element_id):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.ID, element_id)


def css(driver, selector):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, selector)


def js_texts(driver, selector, data_key=None) -> list[str]:
    """The text (or data-KEY) of every element matching `selector`, read at once (the page
    redraws legends and lists as it goes: element handles could go stale)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(n => arguments[1] ? n.dataset[arguments[1]] : n.textContent)", selector, data_key)


def body_data(driver, key):
    return driver.execute_script(f"return document.body.dataset.{key} || ''")


def open_final_run_page(server, driver, run_uuid):
    driver.get(f"{server.base}/test/{run_uuid}")
    wait(driver, lambda d: body_data(d, "final") == "1", 20, "the finished run page")


def dead_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"         # nothing listens there


# ---------------------------------------------------------------------------- 1. verdicts

def test_dead_port_run_reads_failed_on_the_run_page_and_in_history(web):
    server, _target, driver = web
    run_uuid = server.start(url=dead_port_url(), users=2, duration=2, label="dead port")
    status = server.wait_done(run_uuid)
    assert status["result"] == "failed" and "no successful response" in status["result_reason"]

    open_final_run_page(server, driver, run_uuid)
    badge = by_id(driver, "status")
    assert badge.text.lower() == "failed" and badge.get_attribute("data-result") == "failed"
    assert "badge-failed" in badge.get_attribute("class")
    assert by_id(driver, "progress").get_attribute("data-result") == "failed"
    reason = by_id(driver, "result-reason")
    assert reason.is_displayed() and reason.text.startswith("Failed: no successful response")
    # errors carry their first message per kind
    connect = css(driver, "#error-kinds tr[data-kind='connect']")
    assert connect, by_id(driver, "error-kinds").text
    assert re.search(r"first: .*(refused|connect)", connect[0].text, re.I), connect[0].text
    # an empty chart says so instead of drawing blank axes
    latency = by_id(driver, "latency-chart")
    assert latency.get_attribute("data-empty") == "1"
    note = latency.find_element("css selector", ".chart-empty")
    assert note.is_displayed() and note.text == "no responses"
    assert by_id(driver, "distribution-chart").get_attribute("data-empty") == "1"
    screenshot(driver, "run-failed-desktop")

    driver.get(server.base + "/")
    wait(driver, lambda d: css(d, f"#history-row-{run_uuid}"), 10, "the run in the history")
    row = row_texts(driver, run_uuid)
    assert row["result"] == "failed" and "row-failed" in row["cls"] and row["badge"].lower() == "failed", row
    assert "no successful response" in row["reason"]


def test_thresholds_and_breaker_from_the_form_pass_fail_on_the_run_page_and_in_history(web):
    server, target, driver = web
    driver.get(server.base + "/")
    wait(driver, lambda d: by_id(d, "start-form").is_displayed(), 10, "the start form")
    fill(driver, url=target.url, users="2", duration="2", label="thresholds")
    by_id(driver, "pass-fail").click()                     # open the <details>
    fill(driver, thresholds="p99<10s, errors<1%, rps>1000000", abort_on_error_rate="50")
    by_id(driver, "start-button").click()
    run_uuid = wait(driver, lambda d: re.search(r"/test/([0-9a-f-]{36})$", d.current_url), 15,
                    "the run page").group(1)
    wait(driver, lambda d: body_data(d, "final") == "1", 25, "the run to end")
    states = dict(zip([t.split(" ")[0] for t in js_texts(driver, "#thresholds-line .threshold[data-state]")],
                      js_texts(driver, "#thresholds-line .threshold[data-state]", "state")))
    assert states == {"p99<10s": "pass", "errors<1%": "pass", "rps>1000000": "fail"}, states
    assert by_id(driver, "status").get_attribute("data-result") == "failed"
    assert "threshold not met: rps>1000000" in by_id(driver, "result-reason").text
    assert "50.0%" in by_id(driver, "breaker").text
    stored = server.get_json(f"/api/status/{run_uuid}")
    assert stored["abort_on_error_rate"] == 0.5 and not stored["stopped_by_circuit"]

    driver.get(server.base + "/")
    wait(driver, lambda d: css(d, f"#history-row-{run_uuid}"), 10, "the run in the history")
    row = row_texts(driver, run_uuid)
    assert row["thresholds"] == states and row["result"] == "failed", row


def fill(driver, **fields):
    for name, value in fields.items():
        element = by_id(driver, name)
        element.clear()
        element.send_keys(value)


# ---------------------------------------------------------------------------- runs to look at

@pytest.fixture(scope="module")
def finished(web):
    """Finished runs, started together: A and B against the same URL (2 and 4 connections),
    C against another path of the target."""
    server, target, _driver = web
    uuids = {"a": server.start(url=target.url, users=2, duration=3, label="baseline")}
    # B starts once A is stored: A is the older run, the baseline
    deadline = time.monotonic() + 10
    while server.get_json(f"/api/status/{uuids['a']}")["id"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    uuids["b"] = server.start(url=target.url, users=4, duration=3, label="more connections")
    uuids["c"] = server.start(url=target.url + "other", users=2, duration=2, label="other target")
    for run_uuid in uuids.values():
        assert server.wait_done(run_uuid)["status"] == "completed"
    return uuids


def number(text: str) -> float:
    return float(text.replace(",", "").split()[0])


# ---------------------------------------------------------------------------- 2-5. live, settings, actions

def test_open_loop_run_live_cards_agree_with_the_chart_then_settings_actions_and_run_again(web):
    from selenium.webdriver.common.action_chains import ActionChains

    server, target, driver = web
    driver.get(server.base + "/")
    wait(driver, lambda d: by_id(d, "start-form").is_displayed(), 10, "the start form")
    fill(driver, url=target.url, users="4", duration="8", ramp_up="2", rate="400", label="open loop")
    by_id(driver, "start-button").click()
    run_uuid = wait(driver, lambda d: re.search(r"/test/([0-9a-f-]{36})$", d.current_url), 15,
                    "the run page").group(1)

    # live: the headline cards are the chart's last point, and totals are the chart's sums
    checked = 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and checked < 3:
        points = int(body_data(driver, "points") or 0)
        if points >= 3 + checked and body_data(driver, "status") == "running":
            # (read at once: a new second may arrive at any time)
            card_text, last_rps, drawn_text, shown_second = driver.execute_script(
                "return [document.getElementById('stat-rps').textContent, document.body.dataset.lastRps,"
                " document.querySelector('#rps-chart .chart-legend tbody tr:first-child td').textContent,"
                " Number(document.body.dataset.points)]")
            card, last_rps = number(card_text), float(last_rps)
            assert abs(card - last_rps) <= 0.05 * max(last_rps, 1), (card, last_rps)
            # ... the chart's own last point (its legend), and the server's row for that second
            drawn = number(drawn_text)
            assert abs(card - drawn) <= 0.05 * max(drawn, 1), (card, drawn)
            rows = server.get_json(f"/api/timeseries/{run_uuid}")["seconds"]
            served = next(r["rps"] for r in rows if r["second"] == shown_second)
            assert abs(card - served) <= 0.05 * max(served, 1), (card, served, shown_second)
            assert "last second" in by_id(driver, "stat-rps-label").text.lower()
            assert number(by_id(driver, "stat-requests").text) > 0
            assert by_id(driver, "stat-p95").text not in ("", "–")
            checked += 1
        time.sleep(0.2)
    assert checked >= 2, f"only {checked} live checks before the run ended"
    # the rate is reached once the ramp-up is over: 400/s, within 10%
    assert abs(float(body_data(driver, "lastRps")) - 400) <= 40, body_data(driver, "lastRps")
    # legends show last/min/max without hovering
    cells = js_texts(driver, "#rps-chart .chart-legend tbody tr:first-child td")
    assert len(cells) == 3 and "–" not in cells, cells
    # a crosshair shared by the time charts: hovering throughput moves the latency legend
    over = css(driver, "#rps-chart .u-over")[0]
    ActionChains(driver).move_to_element_with_offset(over, 40, 20).perform()
    wait(driver, lambda d: js_texts(d, "#latency-chart .chart-legend thead th")[1].startswith("at "), 5,
         "the latency legend to follow the cursor")
    # zoom: a drag across one chart zooms all of them; a double-click zooms out
    ActionChains(driver).move_to_element_with_offset(over, -200, 20).click_and_hold() \
        .move_by_offset(150, 0).release().perform()
    wait(driver, lambda d: all(by_id(d, f"{c}-chart").get_attribute("data-zoomed") == "1"
                               for c in ("rps", "latency", "connections", "codes", "success")), 5, "zoom")
    ActionChains(driver).double_click(over).perform()
    wait(driver, lambda d: by_id(d, "latency-chart").get_attribute("data-zoomed") == "", 5, "zoom out")

    # history: the running entry shows its live req/s
    driver.get(server.base + "/")
    wait(driver, lambda d: css(d, f"#history-row-{run_uuid}[data-status='running']"), 10,
         "the running run in the history")
    wait(driver, lambda d: re.search(r"^[\d,.]+ now$", row_texts(d, run_uuid)["live"]), 5, "live req/s in history")
    running = driver.execute_script(f"return document.querySelector(\"#running li[data-uuid='{run_uuid}']\")"
                                    ".textContent")
    assert re.search(r"[\d,.]+ req/s now", running), running
    driver.back()

    wait(driver, lambda d: body_data(d, "final") == "1", 25, "the run to end")
    assert by_id(driver, "status").get_attribute("data-status") == "completed"
    # settings panel
    settings = {key: by_id(driver, f"set-{key}").text for key in
                ("mode", "connections", "ramp", "method", "duration", "stop", "ended", "timeout")}
    assert settings["mode"].startswith("open loop, 400"), settings
    assert (settings["connections"], settings["ramp"], settings["method"]) == ("4", "2s", "GET"), settings
    assert re.fullmatch(r"8s / 8\.\ds", settings["duration"]), settings
    assert settings["stop"] == "ran its duration" and settings["timeout"] == "10s", settings
    assert settings["ended"] != "–"
    assert not by_id(driver, "remaining-fact").is_displayed()        # no "Remaining –" when done
    # the finished run's charts: connections in flight, the distribution, p95 in the table
    assert by_id(driver, "connections-chart").get_attribute("data-empty") == ""
    assert by_id(driver, "distribution-chart").get_attribute("data-empty") == ""
    assert css(driver, "#latency-table tr[data-percentile='p95']")
    # copy link: copied, or the link shown to copy by hand
    by_id(driver, "copy-link").click()
    wait(driver, lambda d: by_id(d, "action-note").text, 5, "the copy-link note")
    assert by_id(driver, "action-note").text in ("Link copied.", f"Copy this link: {driver.current_url}")
    screenshot(driver, "run-desktop")
    driver.execute_script("document.querySelector('.charts').scrollIntoView()")
    screenshot(driver, "run-charts-desktop")
    driver.execute_script("window.scrollTo(0, 0)")

    # run again: the form filled with this run's settings
    by_id(driver, "run-again").click()
    wait(driver, lambda d: body_data(d, "prefilled") == run_uuid, 10, "the form filled in")
    values = {f: by_id(driver, f).get_attribute("value")
              for f in ("url", "users", "duration", "ramp_up", "rate", "label")}
    assert values == {"url": target.url, "users": "4", "duration": "8", "ramp_up": "2", "rate": "400",
                      "label": "open loop"}, values
    fill(driver, duration="3", ramp_up="0", label="open loop again")
    by_id(driver, "start-button").click()
    again = wait(driver, lambda d: (m := re.search(r"/test/([0-9a-f-]{36})$", d.current_url))
                 and m.group(1) != run_uuid and m, 15, "the second run's page").group(1)
    wait(driver, lambda d: body_data(d, "final") == "1", 20, "the second run to end")
    link = by_id(driver, "compare-previous")
    assert link.is_displayed()
    assert link.get_attribute("href").endswith(f"/compare?a={run_uuid}&b={again}")


def test_export_links_give_what_the_cli_export_writes(web, finished):
    server, _target, driver = web
    open_final_run_page(server, driver, finished["a"])
    for fmt in ("csv", "json", "ndjson"):
        href = by_id(driver, f"export-{fmt}").get_attribute("href")
        assert href.endswith(f"/api/export/{finished['a']}?format={fmt}")
        with urllib.request.urlopen(href, timeout=10) as response:
            served = response.read().decode()
        cli = subprocess.run([sys.executable, "-m", "loadtester", "export", finished["a"], "--format", fmt,
                              "--db", str(server.db)], capture_output=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        written = cli.stdout.decode()              # (bytes: CSV lines end in \r\n on both)
        if fmt == "json":         # the run's report holds the database path on the CLI only
            served_doc, cli_doc = json.loads(served), json.loads(written)
            assert served_doc["rows"] == cli_doc["rows"] and len(served_doc["rows"]) >= 3
            assert served_doc["run"]["requests"] == cli_doc["run"]["requests"]
        else:
            assert served == written, fmt


def test_delete_asks_first_then_the_run_is_gone(web):
    server, target, driver = web
    run_uuid = server.start(url=target.url, users=1, duration=1, label="to delete")
    server.wait_done(run_uuid)
    open_final_run_page(server, driver, run_uuid)
    by_id(driver, "delete-button").click()
    wait(driver, lambda d: by_id(d, "delete-dialog").get_attribute("open") is not None, 5, "the dialog")
    by_id(driver, "delete-cancel").click()                       # cancel keeps it
    time.sleep(0.3)
    assert server.get_json(f"/api/status/{run_uuid}")["uuid"] == run_uuid
    by_id(driver, "delete-button").click()
    by_id(driver, "delete-confirm").click()
    wait(driver, lambda d: "deleted=1" in d.current_url, 10, "the history after deleting")
    assert by_id(driver, "history-note").text == "The run was deleted."
    with pytest.raises(urllib.error.HTTPError) as gone:
        server.get_json(f"/api/status/{run_uuid}")
    assert gone.value.code == 404
    driver.get(f"{server.base}/test/{run_uuid}")
    assert css(driver, "h1")[0].text == "Run not found"
    driver.get_log("browser")             # (the page's own 404 is logged: asked for, not an error)


# ---------------------------------------------------------------------------- 5. history

def test_history_search_and_sort(web, finished):
    server, _target, driver = web
    driver.get(server.base + "/")
    wait(driver, lambda d: css(d, f"#history-row-{finished['a']}"), 10, "the history")
    driver.execute_script("document.getElementById('history-section').scrollIntoView()")
    screenshot(driver, "history-desktop")
    assert driver.execute_script("const w = document.querySelector('#history-section .table-wrap');"
                                 "return w.scrollWidth <= w.clientWidth"), "the history is wider than its card"
    row = row_texts(driver, finished["b"])
    assert row["load"].startswith("4 conn · 3s · closed"), row
    assert row["errors"].startswith("0") and row["url"] == server.get_json(f"/api/status/{finished['b']}")["url"]
    by_id(driver, "history-search").send_keys("other targ")
    wait(driver, lambda d: history_uuids(d) == [finished["c"]], 5, "only the run labelled 'other target'")
    by_id(driver, "history-search").clear()
    by_id(driver, "history-search").send_keys("/other")         # a URL matches too
    wait(driver, lambda d: history_uuids(d) == [finished["c"]], 5, "only the run against /other")
    by_id(driver, "history-search").clear()
    by_id(driver, "history-search").send_keys("no such run anywhere")
    wait(driver, lambda d: "No run's label or URL contains" in by_id(d, "history-body").text, 5, "no match")
    by_id(driver, "history-search").clear()
    by_id(driver, "history-search").send_keys("o")              # (an input event with text again)
    from selenium.webdriver.support.ui import Select
    Select(by_id(driver, "history-sort")).select_by_value("users")
    wait(driver, lambda d: history_loads(d)[:1] and history_loads(d) == sorted(history_loads(d), reverse=True),
         5, "most connections first")
    assert history_loads(driver)[0] == 4 and history_loads(driver)[-1] <= 2


def history_uuids(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#history-body tr.history-row')].map(r => r.dataset.uuid)")


def history_loads(driver) -> list[int]:
    """The connections of the history's rows, top to bottom."""
    return [int(text.split(" ")[0]) for text in driver.execute_script(
        "return [...document.querySelectorAll('#history-body tr.history-row .load-cell')]"
        ".map(td => td.textContent)")]


def row_texts(driver, run_uuid) -> dict:
    """What the history row of the run says (read at once: the list may be redrawn)."""
    return driver.execute_script("""
        const row = document.getElementById('history-row-' + arguments[0]);
        const text = (sel) => (row.querySelector(sel) || {}).textContent || '';
        return {load: text('.load-cell'), errors: text("td[data-label='Errors']"), url: text('.history-url'),
                reason: text('.history-reason'), badge: text('.badge'), result: row.dataset.result,
                cls: row.className, live: text('.live-rps'),
                thresholds: Object.fromEntries([...row.querySelectorAll('.threshold[data-state]')]
                    .map(t => [t.textContent.split(' ')[0], t.dataset.state]))};""", run_uuid)


# ---------------------------------------------------------------------------- 6. compare

def test_compare_page_overlays_a_and_b_survives_a_reload_and_warns_on_different_targets(web, finished):
    server, _target, driver = web
    driver.get(server.base + "/")
    wait(driver, lambda d: css(d, f"#history-row-{finished['b']}"), 10, "the history")
    by_id(driver, f"compare-{finished['b']}").click()
    by_id(driver, f"compare-{finished['a']}").click()
    by_id(driver, "compare-button").click()
    wait(driver, lambda d: body_data(d, "ready") == "1", 15, "the compare page")
    assert driver.current_url.endswith(f"/compare?a={finished['a']}&b={finished['b']}")   # older = A

    def page_state(d):
        verdict = by_id(d, "compare-verdict")
        differs = js_texts(d, "#settings-table tr.differs", "setting")
        return verdict.text, verdict.get_attribute("data-tone"), differs

    text, tone, differs = page_state(driver)
    assert tone in ("improvement", "regression", "mixed", "no notable change"), (text, tone)
    assert re.search(r": (improvement|regression|mixed)$|^no notable change", text), text
    assert "connections" in differs, differs
    summary = server.get_json(f"/api/compare?a={finished['a']}&b={finished['b']}")["summary"]
    assert text == summary["text"]
    if summary["worse"] and any(m in ("p50", "p99") for m in summary["worse"]):
        assert tone != "improvement"
    # overlaid A and B: each chart draws both runs
    for chart in ("cmp-rps-chart", "cmp-latency-chart", "cmp-distribution-chart"):
        assert by_id(driver, chart).get_attribute("data-empty") == "", chart
        legend = js_texts(driver, f"#{chart} .chart-legend tbody tr", "series")
        assert legend == ["A", "B"], (chart, legend)
        assert css(driver, f"#{chart} canvas"), chart
    assert not by_id(driver, "compare-warning").is_displayed()
    screenshot(driver, "compare-desktop")

    driver.refresh()                                   # the address alone rebuilds the page
    wait(driver, lambda d: body_data(d, "ready") == "1", 15, "the compare page after a reload")
    assert page_state(driver) == (text, tone, differs)

    # runs against different targets: a warning, no verdict
    driver.get(f"{server.base}/compare?a={finished['a']}&b={finished['c']}")
    wait(driver, lambda d: body_data(d, "ready") == "1", 15, "the compare page")
    assert by_id(driver, "compare-verdict").get_attribute("data-tone") == "different targets"
    warning = by_id(driver, "compare-warning")
    assert warning.is_displayed() and "/other" in warning.text
    assert "url" in page_state(driver)[2]

    # no runs, or a run that is not there: said on the page
    driver.get(f"{server.base}/compare")
    wait(driver, lambda d: by_id(d, "page-error").is_displayed(), 5, "the missing-runs message")
    assert by_id(driver, "page-error").text.startswith("Give two runs: /compare?a=UUID&b=UUID")
    driver.get(f"{server.base}/compare?a={finished['a']}&b=00000000-0000-4000-8000-000000000000")
    wait(driver, lambda d: by_id(d, "page-error").is_displayed(), 5, "the unknown-run message")
    assert by_id(driver, "page-error").text.startswith("Run not found")
    driver.get_log("browser")             # (the API's 404 was asked for)


# ---------------------------------------------------------------------------- 7. phones

OFF_SCREEN = """
const width = document.documentElement.clientWidth;
const clipped = (node) => {           // inside a box that scrolls or clips sideways
  for (let p = node.parentElement; p; p = p.parentElement) {
    const o = getComputedStyle(p).overflowX;
    if (o === 'auto' || o === 'scroll' || o === 'hidden') return p;
  }
  return null;
};
const out = [];
for (const node of document.querySelectorAll('body *')) {
  const r = node.getBoundingClientRect();
  if (!r.width || getComputedStyle(node).visibility === 'hidden') continue;
  if (node.closest('.skip-link, .sr-only')) continue;      // off-screen on purpose
  if (r.right > width + 0.5 || r.left < -0.5) {
    const box = clipped(node);
    if (box && box !== document.body && box.getBoundingClientRect().right <= width + 0.5) continue;
    out.push(`${node.tagName.toLowerCase()}#${node.id}.${node.className}: ${Math.round(r.left)}..${Math.round(r.right)}`);
  }
}
return [document.documentElement.scrollWidth, width, out.slice(0, 10)];
"""


def assert_fits(driver, page):
    scroll_width, width, offenders = driver.execute_script(OFF_SCREEN)
    assert width == PHONE[0], width
    assert scroll_width <= PHONE[0], f"{page}: {scroll_width} px wide: {offenders}"
    assert not offenders, f"{page}: off-screen: {offenders}"


def test_phone_every_page_fits_keeps_its_navigation_and_stacks(web, finished):
    server, _target, driver = web
    failed_uuid = server.start(url=dead_port_url(), users=1, duration=1, label="a failed run on a phone")
    server.wait_done(failed_uuid)
    set_viewport(driver, PHONE, mobile=True)
    try:
        driver.get(server.base + "/")
        wait(driver, lambda d: css(d, f"#history-row-{finished['a']}"), 10, "the history")
        assert_fits(driver, "/")
        assert by_id(driver, "new-test").is_displayed()
        assert all(link.is_displayed() for link in css(driver, ".topnav a")), "navigation hidden"
        assert driver.execute_script(f"return getComputedStyle(document.getElementById("
                                     f"'history-row-{finished['a']}')).display") == "block", \
            "history rows are not stacked cards"
        screenshot(driver, "index-phone")
        driver.execute_script("document.getElementById('history-section').scrollIntoView()")
        screenshot(driver, "history-phone")

        for run_uuid, name in ((finished["b"], "run-phone"), (failed_uuid, "run-failed-phone")):
            open_final_run_page(server, driver, run_uuid)
            assert_fits(driver, f"/test/{run_uuid}")
            assert css(driver, ".topnav a")[0].is_displayed()
            title = by_id(driver, "run-title")
            line = float(title.value_of_css_property("line-height").replace("px", ""))
            assert title.size["height"] <= 2 * line + 1, "the run title is squeezed"
            started = by_id(driver, "started-at")
            assert driver.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth", started), \
                f"'Started' is cut: {started.text}"
            assert by_id(driver, "key-numbers").size["width"] <= PHONE[0]
            screenshot(driver, name)

        driver.get(f"{server.base}/compare?a={finished['a']}&b={finished['b']}")
        wait(driver, lambda d: body_data(d, "ready") == "1", 15, "the compare page")
        assert_fits(driver, "/compare")
        change = css(driver, "#compare-table tr[data-metric='rps'] td")[-1]
        assert change.location["x"] + change.size["width"] <= PHONE[0], "compare values off-screen"
        screenshot(driver, "compare-phone")

        driver.get(f"{server.base}/test/00000000-0000-4000-8000-000000000000")
        assert css(driver, "h1")[0].text == "Run not found"
        assert_fits(driver, "Run not found")
        driver.get_log("browser")         # (that page's 404 was asked for)
    finally:
        set_viewport(driver, DESKTOP)


def test_a_stopped_run_says_so_in_its_settings(web):
    server, target, driver = web
    run_uuid = server.start(url=target.url, users=2, duration=30, label="stopped early")
    driver.get(f"{server.base}/test/{run_uuid}")
    wait(driver, lambda d: int(body_data(d, "points") or 0) >= 2, 15, "two seconds of the run")
    assert by_id(driver, "remaining-fact").is_displayed()          # while it runs, it has some left
    by_id(driver, "stop-button").click()
    wait(driver, lambda d: body_data(d, "final") == "1", 25, "the stopped run")
    assert by_id(driver, "status").get_attribute("data-status") == "stopped"
    planned, actual = by_id(driver, "set-duration").text.split(" / ")
    assert planned == "30s" and float(actual.rstrip("s")) < 15, (planned, actual)
    assert server.get_json(f"/api/status/{run_uuid}")["settings"]["stop_reason"] == "interrupted"
    assert by_id(driver, "set-stop").text == "stopped before its end"
    assert not by_id(driver, "remaining-fact").is_displayed()


def test_a_run_the_breaker_stopped_reads_failed_with_the_breaker_tripped(web):
    server, _target, driver = web
    run_uuid = server.start(url=dead_port_url(), users=2, duration=20, abort_on_error_rate="50%",
                            label="breaker")
    status = server.wait_done(run_uuid, timeout_s=20)
    assert status["stopped_by_circuit"], status
    open_final_run_page(server, driver, run_uuid)
    assert by_id(driver, "status").get_attribute("data-result") == "failed"
    assert by_id(driver, "breaker").text == "stop at 50.0% errors: tripped"
    assert by_id(driver, "set-stop").text == "circuit breaker (error rate)"
