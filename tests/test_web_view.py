"""The browser live view in a real browser: `streamrec run CLIP --web` driven by headless Debian Chromium
through Selenium and chromium-driver. The bundled model on the bundled example clip (violin first).

Screenshots are test artefacts, written to $STREAMREC_TEST_ARTIFACTS (default: test-artifacts/ in the
repository, ignored by git).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from http.client import HTTPConnection
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from streamrec.core.assets import EXAMPLE_CLIP

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("STREAMREC_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,  # a real browser on a real-time run
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="chromium and chromium-driver are not installed (scripts/install.sh installs them)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_run(port: int, duration: float, *extra: str) -> subprocess.Popen:
    """The bundled model on the example clip in real time, waiting for one client before it starts."""
    command = [
        sys.executable,
        "-m",
        "streamrec",
        "run",
        str(EXAMPLE_CLIP),
        "--realtime",
        "--duration",
        str(duration),
        "--backend",
        "torch",
        "--no-view",
        "--web",
        f"127.0.0.1:{port}",
        "--token",
        "s3cret",
        "--wait-clients",
        "1",
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"streamrec run exited early:\n{process.stdout.read()}")  # type: ignore[union-attr]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listened on port {port} within {timeout:g} s")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--window-size=1100,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_the_active_class_then_ended_and_reconnects_to_a_restarted_server(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    run = start_run(port, 9.0, "--explain")
    try:
        wait_listening(port, run)
        # the static files are served by the package, with their content types
        http = HTTPConnection("127.0.0.1", port, timeout=5)
        http.request("GET", "/app.js")
        response = http.getresponse()
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/javascript")
        # the page's websocket refuses a client without the token (and such a client does not start the run)
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5)
        assert refused.value.response.status_code == 401

        browser.get(f"http://127.0.0.1:{port}/?token=s3cret")
        wait = WebDriverWait(browser, 20, poll_frequency=0.2)
        started = time.monotonic()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'section.stream .chip[data-class="violin"]'))
        seconds_to_active = time.monotonic() - started
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "web_view_active.png"))
        assert seconds_to_active < 10
        assert browser.find_element(By.ID, "connection").get_attribute("data-state") == "open"
        card = browser.find_element(By.CSS_SELECTOR, "section.stream")
        assert card.get_attribute("data-stream") == "example"
        rows = card.find_elements(By.CSS_SELECTOR, "table.scores tr[data-class]")
        assert len(rows) == 13  # every class of the bundled model has its bars
        assert "latency" in card.find_element(By.CSS_SELECTOR, ".meta").text
        # --explain: the Grad-CAM overlay of the newest frame, for the top class
        explain = card.find_element(By.CSS_SELECTOR, "figure.explain")
        assert explain.is_displayed() and explain.get_attribute("data-class") == "violin"
        assert (
            card.find_element(By.CSS_SELECTOR, "figure.explain img")
            .get_attribute("src")
            .startswith("data:image/jpeg;base64,")
        )

        wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, "section.stream .status").get_attribute("data-state") == "ended"
        )
        browser.save_screenshot(str(ARTIFACTS / "web_view_ended.png"))
        assert run.wait(timeout=30) == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()

    # The server is gone: the page says so and keeps trying; a new server on the same port is found by itself.
    wait = WebDriverWait(browser, 30, poll_frequency=0.2)
    wait.until(lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "closed")
    again = start_run(port, duration=3.0)
    try:
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-hellos") == "2")
        wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, "section.stream .status").get_attribute("data-state") == "ended"
        )
        assert again.wait(timeout=30) == 0
    finally:
        if again.poll() is None:
            again.kill()
            again.wait()
    assert (ARTIFACTS / "web_view_active.png").stat().st_size > 10_000
