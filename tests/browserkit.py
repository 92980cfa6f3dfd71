"""Headless Chromium against a real `loadtester serve`: what the browser tests share.

Needs Debian's chromium and chromium-driver (`make test` installs them); without them a test
fails with why, it never skips.  Screenshots go under tests/artifacts/ (git-ignored)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DESKTOP = (1440, 900)
PHONE = (390, 844)


def require_browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.exists() and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(f"headless browser test needs {' and '.join(missing)}: install the Debian packages "
                    "chromium and chromium-driver (`make test` does, via TEST_DEB_PACKAGES)",
                    pytrace=False)


class Server:
    """`loadtester serve` in its own process, on a free port, with a database in `tmp_path`."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db = tmp_path / "web.db"
        self.log_path = tmp_path / "serve.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadtester", "serve", "--port", str(self.port), "--db", str(self.db),
             "--allow-private", "--max-per-client", "10", "--rate-limit", "0"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.base + "/", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server did not answer on {self.base} within 20 s:\n{self.log_text()}")

    def get_json(self, path: str):
        with urllib.request.urlopen(self.base + path, timeout=5) as response:
            return json.loads(response.read())

    def post_json(self, path: str, payload: dict):
        request = urllib.request.Request(self.base + path, data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def start(self, **payload) -> str:
        """POST /api/start; the new run's uuid."""
        return self.post_json("/api/start", payload)["uuid"]

    def wait_done(self, run_uuid: str, timeout_s: float = 30) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.get_json(f"/api/status/{run_uuid}")
            if status["status"] != "running":
                return status
            time.sleep(0.2)
        raise AssertionError(f"run {run_uuid} still running after {timeout_s} s")

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def browser(tmp_path: Path, size: tuple[int, int] = (1280, 900)):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={size[0]},{size[1]}",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(10)
    return driver


def set_viewport(driver, size: tuple[int, int], mobile: bool = False) -> None:
    """The page's viewport exactly `size` CSS pixels (a phone: mobile=True)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": mobile})


def wait(driver, predicate, timeout_s, what):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(predicate)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what} "
                             f"(page {driver.current_url})") from None


def js_errors(driver) -> list[str]:
    """Console errors (the tests provoke no failed request either)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def full_page_screenshot(driver, path: Path, width: int = 1280) -> None:
    """The whole page: the window is grown until its viewport holds the content."""
    driver.set_window_size(width, 900)
    time.sleep(0.2)
    for _ in range(3):
        content, viewport, outer = driver.execute_script(
            "const b = document.body; b.style.minHeight = '0';"
            "const h = Math.ceil(document.documentElement.scrollHeight);"
            "b.style.minHeight = ''; return [h, innerHeight, outerHeight]")
        if abs(content - viewport) <= 2:
            break
        driver.set_window_size(width, min(max(content, 400), 4000) + (outer - viewport))
        time.sleep(0.3)                   # charts follow the new size
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"


def screenshot(driver, name: str) -> Path:
    """The viewport as tests/artifacts/NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    return path


def assert_png(path: Path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} is suspiciously small ({len(data)} bytes)"
    return data
