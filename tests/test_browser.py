"""The web UI in headless Chromium, against the real server and a real target.

Opens `/`, starts a test through the form, watches the live charts grow from the SSE stream on
`/test/{uuid}`, waits for the run to complete, finds it in the history, and saves screenshots of
the dashboard in the light and the dark theme (to tmp_path; also to bench/results/screenshots/
when LOADTESTER_KEEP_SCREENSHOTS=1).

Needs Debian's chromium and chromium-driver (`make test` installs them); without them this test
fails, it never skips.
"""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from browserkit import (
    Server, assert_png, browser, full_page_screenshot, js_errors, require_browser, wait,
)
from conftest import ROOT

SCREENSHOT_KEEP_DIR = ROOT / "bench" / "results" / "screenshots"
UUID_PATH = re.compile(r"/test/([0-9a-f-]{36})$")


# ---------------------------------------------------------------------------- the test

@pytest.mark.timeout(120)
def test_dashboard_runs_a_test_live_in_a_real_browser(start_target, tmp_path):
    require_browser()
    from selenium.webdriver.common.by import By

    target = start_target("--delay", "5ms")
    server = Server(tmp_path)
    driver = None
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        driver = browser(tmp_path)
        body = lambda: driver.find_element(By.TAG_NAME, "body")            # noqa: E731
        html_theme = lambda: driver.execute_script(                         # noqa: E731
            "return document.documentElement.getAttribute('data-theme')")

        # ---- `/`: start from the light theme, whatever the system prefers
        driver.get(server.base + "/")
        driver.execute_script("localStorage.setItem('loadtester-theme', 'light')")
        driver.refresh()
        wait(driver, lambda d: d.find_element(By.ID, "start-form").is_displayed(), 10, "the start form")
        assert html_theme() == "light"

        # browser-side validation stops a bad URL before it reaches the server
        url_input = driver.find_element(By.ID, "url")
        url_input.clear()
        url_input.send_keys("ftp://example.com/")
        driver.find_element(By.ID, "start-button").click()
        wait(driver, lambda d: d.find_element(By.ID, "url-error").text.strip(), 5, "the URL error")
        assert url_input.get_attribute("aria-invalid") == "true"
        assert "/test/" not in driver.current_url

        # ---- fill the form for real and submit
        url_input.clear()
        url_input.send_keys(target.url)
        for field, value in (("users", "5"), ("duration", "4")):
            element = driver.find_element(By.ID, field)
            element.clear()
            element.send_keys(value)
        driver.find_element(By.ID, "start-button").click()
        wait(driver, lambda d: UUID_PATH.search(d.current_url.split("?")[0]), 15, "the run page /test/{uuid}")
        run_uuid = UUID_PATH.search(driver.current_url.split("?")[0]).group(1)

        # ---- live: the charts grow from the SSE stream, at least twice
        seen: list[int] = []

        def points_grew_twice(_driver):
            points = int(body().get_attribute("data-points") or 0)
            if not seen or points > seen[-1]:
                seen.append(points)
            status = body().get_attribute("data-status")
            if status and status != "running" and len(seen) < 3:
                raise AssertionError(f"run ended ({status}) before the chart grew twice: {seen}")
            return len(seen) >= 3
        wait(driver, points_grew_twice, 15, "data-points to increase twice")
        assert seen[0] < seen[1] < seen[2], seen
        assert driver.find_element(By.ID, "stop-button").is_displayed()
        assert driver.find_elements(By.CSS_SELECTOR, "#rps-chart canvas"), "no uPlot canvas in #rps-chart"
        assert driver.find_elements(By.CSS_SELECTOR, "#latency-chart canvas"), "no uPlot canvas in #latency-chart"

        # ---- done: final numbers, report links, no Stop button
        wait(driver, lambda d: body().get_attribute("data-status") == "completed"
              and body().get_attribute("data-final") == "1", 25, "status completed")
        assert driver.find_element(By.ID, "status").get_attribute("data-status") == "completed"
        assert not driver.find_element(By.ID, "stop-button").is_displayed()
        requests = driver.find_element(By.ID, "stat-requests").text.replace(",", "")
        assert requests.isdigit() and int(requests) > 0, requests
        assert driver.find_elements(By.CSS_SELECTOR, "#status-codes tr[data-code='200']")
        assert int(body().get_attribute("data-points")) >= 3
        links = driver.find_element(By.ID, "report-links")
        assert links.is_displayed()
        assert driver.find_element(By.ID, "report-pdf").get_attribute("href").endswith(f"/api/report/{run_uuid}")
        assert server.get_json(f"/api/status/{run_uuid}")["status"] == "completed"

        # ---- screenshots of the dashboard, light then dark
        light_bg = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        light = shots / "dashboard-light.png"
        full_page_screenshot(driver, light)
        driver.find_element(By.ID, "theme-toggle").click()
        wait(driver, lambda d: html_theme() == "dark", 5, "the dark theme")
        assert driver.execute_script("return localStorage.getItem('loadtester-theme')") == "dark"
        dark_bg = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert dark_bg != light_bg, (light_bg, dark_bg)
        dark = shots / "dashboard-dark.png"
        full_page_screenshot(driver, dark)
        assert assert_png(light) != assert_png(dark), "light and dark screenshots are identical"

        # ---- back on `/`: the theme is remembered and the run is in the history
        driver.set_window_size(1280, 900)
        driver.find_element(By.ID, "back-link").click()
        wait(driver, lambda d: d.find_elements(By.ID, f"history-row-{run_uuid}"), 10, "the run in the history")
        assert html_theme() == "dark"
        row = driver.find_element(By.ID, f"history-row-{run_uuid}")
        load = row.find_element(By.CSS_SELECTOR, ".load-cell").text
        assert load.startswith("5 conn · 4s · closed"), load
        assert row.get_attribute("data-status") == "completed"
        assert row.find_element(By.CSS_SELECTOR, f"a[href='/test/{run_uuid}']")
        full_page_screenshot(driver, shots / "index-dark.png")
        assert_png(shots / "index-dark.png")

        # nothing came from anywhere but this server, and no script error happened
        foreign = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(u => !u.startsWith(location.origin) && !u.startsWith('data:'))")
        assert foreign == [], foreign
        errors = js_errors(driver)
        assert not errors, errors
    except BaseException:
        print("---- server log ----\n" + server.log_text())
        if driver is not None:
            try:
                driver.save_screenshot(str(shots / "failure.png"))
                print("---- browser console ----\n" + json.dumps(driver.get_log("browser"), indent=1))
            except Exception:            # the browser itself may be what failed
                pass
        raise
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
        if os.environ.get("LOADTESTER_KEEP_SCREENSHOTS") == "1":
            SCREENSHOT_KEEP_DIR.mkdir(parents=True, exist_ok=True)
            for png in shots.glob("*.png"):
                shutil.copy2(png, SCREENSHOT_KEEP_DIR / png.name)
