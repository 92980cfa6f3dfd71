"""`insecure` in POST /api/start (the CLI's --insecure): an https target with a self-signed
certificate tested from the web app.  Validated (a boolean or a 400 with one line), passed to
the blast's command line only when asked, stored with the run (its config) and shown in its
settings; the start form's checkbox posts it and Run again restores it.  The real tests start
`loadtester target` serving TLS with a self-signed certificate and a real `loadtester serve`."""
from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from conftest import TargetProcess, self_signed_cert, wait_for
from loadtester.web.api import settings_of
from loadtester.web.app import create_app
from loadtester.web.context import ServeContext
from loadtester.web.errors import ApiError
from loadtester.web.pipeops import translate
from loadtester.web.runs import RunManager
from loadtester.web.validation import validate_start

OK_START = {"url": "https://127.0.0.1:9/", "users": 1, "duration": 1}
RUN_UUID = "00000000-0000-4000-8000-000000000001"
CERTIFICATE_REFUSED = "TLS: certificate verify failed: self-signed certificate"


# --------------------------------------------------------------------------- the field

@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None, [], {}])
def test_insecure_that_is_not_a_boolean_is_a_400_with_one_line(value, db_path):
    message = "insecure must be true or false"
    with pytest.raises(ApiError) as info:
        validate_start({**OK_START, "insecure": value})
    assert (info.value.status, info.value.message) == (400, message)
    with TestClient(create_app(ServeContext(db_path=db_path, allow_private=True))) as client:
        answer = client.post("/api/start", json={**OK_START, "insecure": value})
    assert answer.status_code == 400 and answer.json() == {"error": message}


def test_insecure_defaults_to_false_and_goes_to_the_blast_only_when_asked(tmp_path):
    manager = RunManager(tmp_path / "runs.db")
    assert validate_start(OK_START).insecure is False
    plain = manager.command(RUN_UUID, validate_start(OK_START))
    refused = manager.command(RUN_UUID, validate_start({**OK_START, "insecure": False}))
    skipped = manager.command(RUN_UUID, validate_start({**OK_START, "insecure": True}))
    assert "--insecure" not in plain and "--insecure" not in refused
    assert skipped.count("--insecure") == 1
    assert skipped.index("--insecure") < skipped.index("--")        # an option, not the URL


def test_the_pipeops_body_has_no_insecure_field():
    # the original API had none: there it is an unknown field, as any other
    with pytest.raises(ApiError) as info:
        translate({"host": "https://127.0.0.1:9/", "users": 1, "duration": 1, "insecure": True})
    assert info.value.status == 400
    assert info.value.message.startswith("unknown field 'insecure' in a PipeOps-style body")


def test_settings_say_whether_certificates_were_verified():
    row = {"status": "completed", "total_users": 1, "duration": 1}
    assert settings_of(row, '{"insecure": true}')["insecure"] is True
    assert settings_of(row, {"insecure": False})["insecure"] is False
    assert settings_of(row, None)["insecure"] is False          # a run stored before the field


# --------------------------------------------------------------------------- a real serve, a real TLS target

@pytest.fixture
def tls_target(tmp_path):
    cert, key = self_signed_cert(tmp_path)
    target = TargetProcess("--tls-cert", cert, "--tls-key", key)
    assert target.url.startswith("https://127.0.0.1:")
    yield target
    target.stop()


def blast_command_line(server) -> list[bytes]:
    """The argv of the one blast the server runs, read from /proc while it runs."""
    assert wait_for(lambda: len(server.children()) == 1, 15), "no blast started"
    blast = server.children()[0]
    with open(f"/proc/{blast}/cmdline", "rb") as handle:
        argv = handle.read().split(b"\0")
    assert b"blast" in argv, argv
    return argv


@pytest.mark.timeout(120)
def test_real_self_signed_target_fails_verification_unless_insecure(tls_target, tmp_path):
    from test_serve_api import Server
    server = Server(tmp_path / "runs.db", "--allow-private")
    try:
        # without the field: the certificate is refused, the run reads failed with why
        started = server.start(url=tls_target.url, users=2, duration=2, label="verified")
        assert started.status == 201, started.body
        refused_uuid = started.json["uuid"]
        assert b"--insecure" not in blast_command_line(server)
        refused = server.wait_status(refused_uuid, {"completed", "failed"}, 30)
        assert wait_for(lambda: not server.children(), 10), "the first blast did not end"

        started = server.start(url=tls_target.url, users=2, duration=2, rate=50, insecure=True,
                               label="insecure")
        assert started.status == 201, started.body
        accepted_uuid = started.json["uuid"]
        assert blast_command_line(server).count(b"--insecure") == 1
        running = server.status(accepted_uuid)
        accepted = server.wait_status(accepted_uuid, {"completed", "failed"}, 30)
        metrics = server.get(f"/api/metrics/{accepted_uuid}").json
    finally:
        server.terminate()

    assert refused["result"] == "failed", refused
    assert refused["error_messages"]["connect"].startswith(CERTIFICATE_REFUSED), refused
    assert "no successful response" in refused["result_reason"], refused
    assert refused["settings"]["insecure"] is False

    assert running["settings"]["insecure"] is True               # (while it runs, too)
    assert accepted["status"] == "completed" and accepted["result"] == "no thresholds", accepted
    assert accepted["settings"]["insecure"] is True
    assert metrics["errors"] == 0 and metrics["requests"] > 0, metrics
    served = tls_target.stats()["served"]                       # none of the refused run's
    # with a duration, a request in flight at the end is served but not counted: at most one
    # per connection
    assert metrics["requests"] <= served <= metrics["requests"] + 2, (metrics["requests"], served)


# --------------------------------------------------------------------------- the form, in Chromium

@pytest.mark.timeout(240)
def test_real_form_checkbox_posts_insecure_and_run_again_restores_it(tls_target, tmp_path):
    from browserkit import (
        DESKTOP, PHONE, Server, browser, js_errors, require_browser, screenshot, set_viewport, wait,
    )
    from test_web_ui import assert_fits, body_data, by_id, fill

    require_browser()
    server = Server(tmp_path)
    driver = browser(tmp_path, DESKTOP)
    set_viewport(driver, DESKTOP)

    def start_from_the_form(previous=None) -> str:
        by_id(driver, "start-button").click()
        found = wait(driver, lambda d: (m := re.search(r"/test/([0-9a-f-]{36})$", d.current_url))
                     and m.group(1) != previous and m, 15, "the run page")
        wait(driver, lambda d: body_data(d, "final") == "1", 30, "the run to end")
        return found.group(1)

    try:
        driver.get(server.base + "/")
        wait(driver, lambda d: by_id(d, "start-form").is_displayed(), 10, "the start form")
        box = by_id(driver, "insecure")
        assert not box.is_displayed()                             # no URL: nothing to verify
        fill(driver, url=tls_target.url.replace("https:", "http:"))
        assert not box.is_displayed()                             # http: nothing to verify
        fill(driver, url=tls_target.url, users="2", duration="2", label="self-signed")
        assert box.is_displayed() and not box.is_selected()
        label = driver.find_element("css selector", "label[for='insecure']").text
        assert label == "Skip TLS certificate verification (self-signed targets)"
        # a phone still fits the form with the box shown
        set_viewport(driver, PHONE, mobile=True)
        assert_fits(driver, "/ with the TLS box")
        driver.execute_script("document.getElementById('insecure').scrollIntoView({block: 'center'})")
        screenshot(driver, "index-insecure-phone")
        driver.execute_script("window.scrollTo(0, 0)")
        set_viewport(driver, DESKTOP)
        box.click()
        skipped_uuid = start_from_the_form()
        assert by_id(driver, "status").get_attribute("data-status") == "completed"
        assert by_id(driver, "set-tls-row").is_displayed()
        assert by_id(driver, "set-tls").text == "skipped"
        stored = server.get_json(f"/api/status/{skipped_uuid}")
        assert stored["settings"]["insecure"] is True and stored["result"] == "no thresholds"
        served = tls_target.stats()["served"]
        assert served >= server.get_json(f"/api/metrics/{skipped_uuid}")["requests"] > 0
        set_viewport(driver, PHONE, mobile=True)
        assert_fits(driver, f"/test/{skipped_uuid}")
        driver.execute_script("document.getElementById('set-tls').scrollIntoView({block: 'center'})")
        screenshot(driver, "run-insecure-phone")
        driver.execute_script("window.scrollTo(0, 0)")
        set_viewport(driver, DESKTOP)

        # Run again: the box comes back ticked; unticked, the run verifies and is refused
        by_id(driver, "run-again").click()
        wait(driver, lambda d: body_data(d, "prefilled") == skipped_uuid, 10, "the form filled in")
        box = by_id(driver, "insecure")
        assert box.is_displayed() and box.is_selected()
        box.click()
        fill(driver, label="verified")
        verified_uuid = start_from_the_form(skipped_uuid)
        assert by_id(driver, "status").get_attribute("data-result") == "failed"
        assert by_id(driver, "set-tls").text == "verified"
        stored = server.get_json(f"/api/status/{verified_uuid}")
        assert stored["settings"]["insecure"] is False
        assert stored["error_messages"]["connect"].startswith(CERTIFICATE_REFUSED), stored
        assert tls_target.stats()["served"] == served           # no request got through

        # and Run again of that one leaves the box clear
        by_id(driver, "run-again").click()
        wait(driver, lambda d: body_data(d, "prefilled") == verified_uuid, 10, "the form filled in")
        assert by_id(driver, "insecure").is_displayed() and not by_id(driver, "insecure").is_selected()
        errors = js_errors(driver)
    except BaseException:
        print("---- server log ----\n" + server.log_text())
        raise
    finally:
        driver.quit()
        server.stop()
    assert not errors, errors
