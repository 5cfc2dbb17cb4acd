"""The status page in real headless Chromium (Debian ``chromium`` + ``chromium-driver``),
driven with selenium: each member is shown with its state and its figures (commands per
second while calls come in, errors, time since its last change, downtime), and a killed
member is shown going offline, its downtime growing, as the page refreshes itself.

With RTPCLUSTER_SCREENSHOT_DIR set, the test leaves screenshots there (docs/ uses them).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from rtpcluster.admin.client import send_command
from tests.conftest import MemberFactory
from tests.integration.observe_harness import missing, require_program, rtpcluster_process

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    chromium = require_program("chromium", "chromium")
    driver_path = require_program("chromedriver", "chromium-driver")
    options = Options()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1280,560")
    try:
        # Both paths given: selenium runs these programs and fetches nothing.
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except Exception as err:  # a driver that does not match the browser, say
        missing(f"a working chromium + chromedriver ({err.__class__.__name__}: {err})")
        raise
    try:
        yield driver
    finally:
        driver.quit()


# The page redraws its tables on every refresh, so an element found by one call may be
# gone by the next: each read is one script that finds and reads at once.
STATES_JS = """
return Array.from(document.querySelectorAll("section[data-cluster='c1'] tr[data-member]"))
  .map((row) => [row.dataset.member, row.querySelector(".badge").textContent]);
"""
TEXT_JS = "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;"
SHOWN_JS = """
const e = document.querySelector(arguments[0]);
return e !== null && getComputedStyle(e).display !== "none";
"""


def states(driver: WebDriver) -> dict[str, str]:
    """member -> the state the page shows (its badge text)."""
    return dict(driver.execute_script(STATES_JS))


def text(driver: WebDriver, selector: str) -> str:
    found = driver.execute_script(TEXT_JS, selector)
    return "" if found is None else str(found)


def cell(driver: WebDriver, member: str, label: str) -> str:
    return text(driver, f"tr[data-member='{member}'] td[data-label='{label}']")


def shown(driver: WebDriver, selector: str) -> bool:
    return bool(driver.execute_script(SHOWN_JS, selector))


def screenshot(driver: WebDriver, name: str) -> None:
    where = os.environ.get("RTPCLUSTER_SCREENSHOT_DIR")
    if where:
        driver.save_screenshot(str(Path(where) / name))


@contextmanager
def calls_coming_in(port: int, per_second: float = 20.0, most: int = 1000) -> Iterator[None]:
    """New calls at about ``per_second`` to the cluster's udp port, in a thread, until the
    block ends (at most ``most`` of them): what makes commands/s move on the page."""
    stop = threading.Event()

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(2)
            for i in range(most):
                if stop.wait(1 / per_second):
                    return
                command = f"t{i} U trickle{i} 127.0.0.1 4000 f{i}"
                client.sendto(command.encode(), ("127.0.0.1", port))
                with contextlib.suppress(TimeoutError):  # an offer to the killed member
                    client.recv(1000)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def number(text: str) -> float | None:
    """A figure the page shows (``12.5``), or None for a dash or anything else."""
    return float(text) if re.fullmatch(r"\d+(\.\d+)?", text) else None


def test_status_page_shows_members_and_one_going_offline(
    browser: WebDriver, rtpproxy: MemberFactory
) -> None:
    proxies = [rtpproxy(), rtpproxy(), rtpproxy()]
    members = [(f"rtpp{i + 1}", proxy) for i, proxy in enumerate(proxies)]
    with rtpcluster_process(members) as cluster:
        cluster.start()
        cluster.wait_online()
        cluster.new_calls(12)
        lines, ok = send_command(str(cluster.admin), "modify c1 suspend rtpp3", 10)
        assert ok, lines

        browser.get(cluster.url + "/")
        wait = WebDriverWait(browser, 20, poll_frequency=0.1)
        wait.until(lambda d: states(d) == {"rtpp1": "online", "rtpp2": "online", "rtpp3": "online"})
        wait.until(lambda d: cell(d, "rtpp3", "status") == "SUSPENDED")
        assert cell(browser, "rtpp1", "weight") == "100"
        assert cell(browser, "rtpp1", "capacity") == "50"
        assert cell(browser, "rtpp1", "RTT").endswith(" ms")
        sessions = [int(cell(browser, m, "sessions")) for m in ("rtpp1", "rtpp2", "rtpp3")]
        assert sum(sessions) >= 12
        assert text(browser, "#summary") == "1 cluster, 3 of 3 members online"
        # every member's figures are counted: nothing answered badly; the time since its
        # change to online, and its downtime (the time it took to answer its first probe)
        downtime = {}
        for m in ("rtpp1", "rtpp2", "rtpp3"):
            assert cell(browser, m, "errors") == "0"
            assert re.fullmatch(r"\d+ s", cell(browser, m, "since change"))
            downtime[m] = cell(browser, m, "downtime")
            assert re.fullmatch(r"\d+ s", downtime[m])

        with calls_coming_in(cluster.udp_port):
            # new calls go to the active members only: their rate moves, rtpp3's stays 0
            wait.until(lambda d: (number(cell(d, "rtpp1", "commands/s")) or 0) > 0)
            wait.until(lambda d: number(cell(d, "rtpp3", "commands/s")) == 0)
            proxies[0].kill()
            wait.until(lambda d: states(d).get("rtpp1") == "offline")
            assert states(browser) == {"rtpp1": "offline", "rtpp2": "online", "rtpp3": "online"}
            wait.until(lambda d: text(d, "#summary") == "1 cluster, 2 of 3 members online")
            # the killed member's downtime counts up; the others' stands still
            wait.until(lambda d: cell(d, "rtpp1", "downtime") not in (downtime["rtpp1"], ""))
            assert cell(browser, "rtpp2", "downtime") == downtime["rtpp2"]
            wait.until(lambda d: (number(cell(d, "rtpp2", "commands/s")) or 0) > 0)
            screenshot(browser, "status-page.png")

        browser.set_window_size(390, 844)  # a phone
        wait.until(lambda d: not shown(d, "thead") and shown(d, "tr[data-member='rtpp1']"))
        screenshot(browser, "status-page-phone.png")

        # the service going away: the page says its figures are stale
        assert cluster.stop() == 0
        wait.until(lambda d: shown(d, "#problem"))
        assert "stale" in text(browser, "#problem")
