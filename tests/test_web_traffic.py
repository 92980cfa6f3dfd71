"""The web app shows the traffic a run sent (issue 15): its data file (name, rows, sha256,
order, seed), weights per target, journey steps and think time, in /api/status's settings,
in /api/compare's settings diff, and on the run page (with per-target counts and latency).

Real runs: `loadtester blast` against a real `loadtester target` on 127.0.0.1, stored in the
SQLite file a real `loadtester serve` reads; the run page in headless Chromium."""
from __future__ import annotations

import hashlib
import json
import re

import pytest

from browserkit import (
    DESKTOP, PHONE, Server, browser, js_errors, require_browser, screenshot, set_viewport, wait,
)
from conftest import TargetProcess, blast_json

from loadtester.analysis.report import traffic_summary

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

WEIGHTS = (("browse", 70), ("search", 25), ("checkout", 5))
STEPS = ("login", "search", "cart")
MANY_TARGETS = 25                 # more than the run page's 20 rows


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A serve, and in its database: a --data run, a weighted run (host masked), two journeys
    with think time that differ only in their steps, and a run of 25 weighted targets."""
    tmp_path = tmp_path_factory.mktemp("web-traffic")
    target = TargetProcess()
    server = Server(tmp_path)
    try:
        rows = write(tmp_path / "users.csv", "id\n" + "".join(f"{i}\n" for i in range(200)))
        weights = write(tmp_path / "mix.txt", "\n".join(
            f"GET {target.url}{path}\nweight: {weight}\n" for path, weight in WEIGHTS))
        journey = write(tmp_path / "journey.txt", "\n".join(f"GET {target.url}{step}\n" for step in STEPS))
        other = write(tmp_path / "other.txt", "\n".join(f"GET {target.url}{step}2\n" for step in STEPS))
        many = write(tmp_path / "many.txt", "\n".join(
            f"GET {target.url}t{i}\nweight: {i + 1}\n" for i in range(MANY_TARGETS)))
        db = server.db
        runs = {
            "data": blast_json(target.url + "u/{{id}}", "--data", rows, "--data-order", "random",
                               "--seed", "7", "-n", "400", "-c", "4", db=db),
            "weighted": blast_json(f"--targets={weights}", "-n", "1000", "-c", "4", "--mask-host",
                                   db=db),
            "journey": blast_json(f"--journey={journey}", "--think", "20ms", "-c", "4", "-n", "60",
                                  "--label", "journey", db=db),
            "other journey": blast_json(f"--journey={other}", "--think", "20ms", "-c", "4",
                                        "-n", "60", db=db),
            "many": blast_json(f"--targets={many}", "-n", "3250", "-c", "4", db=db),
        }
        yield server, target, runs, rows
    except BaseException:
        print("---- server log ----\n" + server.log_text())
        raise
    finally:
        server.stop()
        target.stop()


def traffic_of(server, report) -> dict:
    return server.get_json(f"/api/status/{report['uuid']}")["settings"]["traffic"]


def test_status_settings_carry_the_data_weights_journey_and_think_time(served):
    server, target, runs, rows = served
    data_run = traffic_of(server, runs["data"])
    assert data_run["data"] == {"file": "users.csv", "rows": 200,
                                "sha256": hashlib.sha256(rows.read_bytes()).hexdigest(),
                                "order": "random", "seed": 7, "per_connection": False,
                                "variants": 200}
    assert str(rows.parent) not in json.dumps(data_run)          # the name, never the path
    assert data_run["summary"] == traffic_summary(runs["data"]["traffic"])
    assert (data_run["weights"], data_run["journey"], data_run["think_ms"]) == (None, None, None)

    weighted = traffic_of(server, runs["weighted"])
    assert [w["weight"] for w in weighted["weights"]] == [70, 25, 5]
    # the run asked for its host masked: so are its targets (host, path and query)
    assert all(w["target"].startswith("GET http://12") and "***" in w["target"]
               for w in weighted["weights"]), weighted["weights"]
    assert not any(path in json.dumps(weighted) for path, _ in WEIGHTS)

    journey = traffic_of(server, runs["journey"])
    assert journey["journey"] == [f"GET {target.url}{step}" for step in STEPS]
    assert journey["think_ms"] == [20.0, 20.0] and journey["data"] is None
    assert journey["summary"] == "journey of 3 steps; think 20.00ms"

    plain = blast_json(target.url, "-n", "10", "-c", "1", db=server.db)
    assert server.get_json(f"/api/status/{plain['uuid']}")["settings"]["traffic"] is None


def compare_traffic(server, a, b) -> dict:
    settings = server.get_json(f"/api/compare?a={a['uuid']}&b={b['uuid']}")["settings"]
    return next(s for s in settings if s["key"] == "traffic")


def test_compare_settings_tell_runs_with_different_traffic_apart(served):
    server, _target, runs, _rows = served
    row = compare_traffic(server, runs["data"], runs["weighted"])
    assert row["name"] == "Traffic" and row["differs"]
    assert row["a"] == traffic_of(server, runs["data"])
    assert row["b"] == traffic_of(server, runs["weighted"])
    # the same few words ("journey of 3 steps; think 20.00ms"), other steps: still different
    row = compare_traffic(server, runs["journey"], runs["other journey"])
    assert row["a"]["summary"] == row["b"]["summary"] and row["differs"]
    assert compare_traffic(server, runs["journey"], runs["journey"])["differs"] is False


def page_traffic(driver) -> dict:
    return driver.execute_script("""
        const text = (id) => document.getElementById(id).textContent;
        const shown = (id) => !document.getElementById(id).hidden;
        return {data: shown('set-data-row') ? text('set-data') : null,
                sha: document.querySelector('#set-data abbr')?.title ?? null,
                think: shown('set-think-row') ? text('set-think') : null,
                steps: shown('set-journey-row') ?
                    [...document.querySelectorAll('#set-journey li')].map(li => li.textContent) : null,
                weights: shown('set-weights-row') ?
                    [...document.querySelectorAll('#set-weights li')].map(li => li.textContent) : null,
                targets: shown('targets-card') ? [...document.querySelectorAll('#targets-table tbody tr')]
                    .map(tr => [...tr.cells].map(td => td.textContent)) : null,
                more: shown('targets-more') ? text('targets-more') : null,
                variants: shown('variants-note') ? text('variants-note') : null,
                settings: document.querySelector('.settings-card').textContent,
                width: document.documentElement.scrollWidth};""")


def shoot(driver, selector, name):
    """tests/artifacts/NAME.png with `selector` in view (the part this module is about)."""
    driver.execute_script("document.querySelector(arguments[0]).scrollIntoView({block: 'center'})",
                          selector)
    screenshot(driver, name)


def test_the_run_page_shows_the_traffic_and_fits_a_phone(served, tmp_path):
    require_browser()
    server, target, runs, rows = served
    driver = browser(tmp_path, DESKTOP)
    try:
        def open_run(report, size):
            set_viewport(driver, size, mobile=size == PHONE)
            driver.get(f"{server.base}/test/{report['uuid']}")
            wait(driver, lambda d: d.execute_script("return document.body.dataset.final") == "1",
                 20, "the finished run page")
            return page_traffic(driver)

        for size in (DESKTOP, PHONE):
            journey = open_run(runs["journey"], size)
            assert journey["steps"] == [f"GET {target.url}{step}" for step in STEPS], journey
            assert journey["think"] == "20.00 ms between steps"
            assert journey["data"] is None and journey["weights"] is None
            steps = journey["targets"]
            assert [row[:2] for row in steps] == [[str(i + 1), f"GET {target.url}{step}"]
                                                  for i, step in enumerate(STEPS)]
            assert [int(row[2].replace(",", "")) for row in steps] == \
                [t["requests"] for t in runs["journey"]["targets"]]
            assert all(row[-1].endswith(("ms", "µs")) for row in steps), steps     # p99 per step
            assert journey["width"] <= size[0], (size, journey["width"])
            # a count run (-n 60) says its count where a duration run says its duration
            assert driver.find_element("id", "duration-value").text == "60 requests"
            assert not re.search("null|undefined|NaN", journey["settings"]), journey["settings"]
            shoot(driver, "#set-journey-row", f"run-journey-{size[0]}")

            data = open_run(runs["data"], size)
            sha = hashlib.sha256(rows.read_bytes()).hexdigest()
            assert data["data"].startswith("users.csv · 200 rows · sha256 " + sha[:12]), data
            assert data["sha"] == sha and "random, seed 7" in data["data"]
            assert data["targets"] is None                    # one target: no table
            assert data["variants"].startswith("Each of the 200 request variants was sent 2 to 2 times")
            assert f"loadtester export {runs['data']['run_id']} --variants" in data["variants"]
            assert data["width"] <= size[0], (size, data["width"])

        many = open_run(runs["many"], PHONE)
        assert len(many["weights"]) == 21 and many["weights"][-1].startswith("… and 5 more")
        assert len(many["targets"]) == 20
        counts = [int(row[3].replace(",", "")) for row in many["targets"]]
        assert counts == sorted(counts, reverse=True) and many["targets"][0][1].endswith("/t24")
        assert many["more"].startswith("The 20 most sent of 25: … and 5 more")
        assert many["width"] <= PHONE[0], many["width"]
        shoot(driver, "#targets-card", "run-many-targets-390")

        weighted = open_run(runs["weighted"], DESKTOP)
        assert [w.split(" (")[0] for w in weighted["weights"]] == ["70", "25", "5"]
        assert [row[2] for row in weighted["targets"]] == ["70", "25", "5"]
        shoot(driver, ".settings-card", "run-weighted-1440")

        driver.get(f"{server.base}/compare?a={runs['journey']['uuid']}&b={runs['other journey']['uuid']}")
        wait(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1", 20,
             "the compare page")
        row = driver.execute_script("""const tr = document.querySelector('#settings-table tr[data-setting=traffic]');
            return [tr.className, [...tr.cells].map(c => c.textContent)];""")
        shoot(driver, "tr[data-setting=traffic]", "compare-journeys-1440")
        assert row[0] == "differs" and "step 1: GET " in row[1][1] and f"{STEPS[0]}2" in row[1][2], row
    finally:
        try:
            errors = js_errors(driver)
        finally:
            driver.quit()
    assert not errors, errors
