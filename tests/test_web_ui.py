"""The web app as a product, in headless Chromium at 1440x900 and 390x844: verdicts that read
right, a settings panel, actions (run again, compare, export, copy link, delete), live cards
that agree with the charts, charts with legends, crosshair and zoom, history search and sort,
the compare page, and phones.

One real `loadtester serve` (its own SQLite file) and one real `loadtester target` for the
module; every run is a real blast the web app starts against 127.0.0.1.  Screenshots go to
tests/artifacts/ (git-ignored)."""
from __future__ import annotations

import re

import pytest

from browserkit import (
    DESKTOP, Server, browser, js_errors, require_browser, screenshot, set_viewport, wait,
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
    row = wait(driver, lambda d: css(d, f"#history-row-{run_uuid}"), 10, "the run in the history")[0]
    assert row.get_attribute("data-result") == "failed" and "row-failed" in row.get_attribute("class")
    assert row.find_element("css selector", ".badge").text.lower() == "failed"
    assert "no successful response" in row.find_element("css selector", ".history-reason").text


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
    states = {t.text.split(" ")[0]: t.get_attribute("data-state")
              for t in css(driver, "#thresholds-line .threshold[data-state]")}
    assert states == {"p99<10s": "pass", "errors<1%": "pass", "rps>1000000": "fail"}, states
    assert by_id(driver, "status").get_attribute("data-result") == "failed"
    assert "threshold not met: rps>1000000" in by_id(driver, "result-reason").text
    assert "50.0%" in by_id(driver, "breaker").text
    stored = server.get_json(f"/api/status/{run_uuid}")
    assert stored["abort_on_error_rate"] == 0.5 and not stored["stopped_by_circuit"]

    driver.get(server.base + "/")
    row = wait(driver, lambda d: css(d, f"#history-row-{run_uuid}"), 10, "the run in the history")[0]
    pills = {t.text.split(" ")[0]: t.get_attribute("data-state")
             for t in row.find_elements("css selector", ".threshold[data-state]")}
    assert pills == states
    assert row.get_attribute("data-result") == "failed"


def fill(driver, **fields):
    for name, value in fields.items():
        element = by_id(driver, name)
        element.clear()
        element.send_keys(value)
