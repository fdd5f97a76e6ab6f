"""The status page in a real browser: Debian's headless Chromium driven by Selenium, against a
real `tlwatch run` on the sandbox. Skipped, saying why, where Chromium or its driver is missing
(`make test` installs them when run as root)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pgserver import free_port

from conftest import FIXTURES, Daemon, answers, wait_for

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
    pytest.skip(
        "Chromium is missing (apt-get install -y chromium chromium-driver; "
        "make test does it as root)",
        allow_module_level=True,
    )
os.environ["SE_AVOID_STATS"] = "true"  # Selenium Manager: no statistics, no download

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(daemon: Daemon, browser: WebDriver) -> Iterator[str]:
    """The daemon serving its page, and the browser on it, signed in through `tlwatch ui`."""
    port = free_port()
    daemon.configure(ui=f'listen = "127.0.0.1:{port}"')
    daemon.sandbox.settings(processing_seconds=2.0)  # long enough to be seen processing
    daemon.start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(base), timeout=20)
    browser.delete_all_cookies()
    browser.get(daemon.command("ui", "--print", check=True).stdout.strip())
    until(browser, lambda: text(browser, "link") == "live")
    yield base
    if daemon.process is not None:
        assert daemon.stop() == 0


def until(browser: WebDriver, condition: Callable[[], Any], timeout: float = 30) -> Any:
    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda _: condition())


def text(browser: WebDriver, element: str) -> str:
    return str(browser.find_element(By.ID, element).text)


def test_a_file_dropped_in_goes_from_queued_to_ready_without_a_reload(
    daemon: Daemon, browser: WebDriver, page: str
) -> None:
    marker = browser.execute_script("return window.performance.timeOrigin")
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "clip.mp4")
    until(browser, lambda: "clip.mp4" in text(browser, "flight"))  # uploading, then processing
    until(browser, lambda: "clip.mp4" in text(browser, "ready"))
    assert "clip.mp4" not in text(browser, "flight")
    assert "1 ready" in text(browser, "folders")
    assert browser.execute_script("return window.performance.timeOrigin") == marker  # no reload
    # The daemon restarts: the page says it is reconnecting, then goes on by itself.
    assert daemon.stop() == 0
    until(browser, lambda: text(browser, "link") == "reconnecting…")
    daemon.start()
    until(browser, lambda: text(browser, "link") == "live")
    shutil.copy(FIXTURES / "tone.wav", daemon.watch / "tone.wav")
    until(browser, lambda: "tone.wav" in text(browser, "ready"))


def test_retry_puts_a_failed_file_back_in_the_queue(
    daemon: Daemon, browser: WebDriver, page: str
) -> None:
    daemon.sandbox.fault(endpoint="create", status=400, code="parameter_invalid")
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "refused.mp4")
    until(browser, lambda: "parameter_invalid" in text(browser, "trouble"))
    browser.find_element(By.CSS_SELECTOR, "#trouble button.retry").click()
    until(browser, lambda: "refused.mp4" in text(browser, "ready"))
    assert "nothing failed or held" in text(browser, "trouble")
    assert "retry asked for" in daemon.log() or "queued" in daemon.log()


def test_pause_stops_new_uploads_and_resume_starts_them(
    daemon: Daemon, browser: WebDriver, page: str
) -> None:
    browser.find_element(By.ID, "pause").click()
    until(browser, lambda: text(browser, "health").startswith("Paused"))
    shutil.copy(FIXTURES / "photo.png", daemon.watch / "waits.png")
    daemon.wait_states({"waits.png": "queued"})
    assert daemon.sandbox.requests().get("create", {}) == {}  # nothing was sent
    assert "waits.png" not in text(browser, "ready")
    browser.find_element(By.ID, "resume").click()
    until(browser, lambda: "waits.png" in text(browser, "ready"))
    assert text(browser, "health").startswith("Well")


def test_a_hostile_file_name_shows_as_text(daemon: Daemon, browser: WebDriver, page: str) -> None:
    hostile = "<img src=x onerror=\"document.title='owned'\">.mp4"
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / hostile)
    until(browser, lambda: hostile in text(browser, "ready"))
    assert browser.find_elements(By.CSS_SELECTOR, "#ready img") == []
    assert browser.title.startswith("tlwatch on") and "owned" not in browser.title


def test_without_the_link_the_page_reads_but_cannot_act(
    daemon: Daemon, browser: WebDriver, page: str
) -> None:
    browser.delete_all_cookies()
    browser.get(page + "/")
    until(browser, lambda: text(browser, "link") == "live")
    browser.find_element(By.ID, "pause").click()
    until(browser, lambda: "tlwatch ui" in text(browser, "said"))
    assert httpx.get(page + "/api/v1/status").json()["daemon"]["paused"] == {}
