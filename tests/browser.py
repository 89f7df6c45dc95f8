"""Browser tests' shared pieces: Debian's headless chromium driven by selenium (``headless_chromium``, and the
``chromium`` fixture: one browser per test module). Used by the console's and the proof-of-reserves verifier
page's browser tests, with the console's sign-in through a one-time link (``console_sign_in``); extend this file
additively."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def headless_chromium(width: int = 1400, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """Headless chromium with a throw-away profile, no network of its own (no sync, updates, background
    fetches), quit and its profile removed on exit."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options = Options()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for browser_log
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            driver.set_page_load_timeout(20)
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def chromium() -> Iterator[webdriver.Chrome]:
    """One headless chromium for the whole test module (starting one takes about a second)."""
    with headless_chromium() as driver:
        yield driver


def browser_log(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The page's console since the last call: script errors, Content-Security-Policy violations and blocked
    loads come as level "SEVERE", so a test can assert that a page raised none.

    (A page opened from file:// is tested without --allow-file-access-from-files, as a customer's browser
    runs: with it, Chromium lets the page fetch() its sibling files and loads a subresource with an
    ``integrity`` attribute, both of which a real browser blocks there.)"""
    return list(driver.get_log("browser"))


def page_text(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def click(driver: webdriver.Chrome, by: str, selector: str) -> None:
    """Click what submits a form or follows a link, and wait until the next page has replaced this one."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(by, selector).click()
    WebDriverWait(driver, 20).until(staleness_of(page))
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")


def console_sign_in(driver: webdriver.Chrome, console_url: str, link: str) -> None:
    """Sign the browser in to the operators' console through a one-time link (`custody console login`'s URL):
    open it, check whom it signs in, press the button, and land on the overview."""
    driver.get(link)
    assert "Sign in as" in page_text(driver), page_text(driver)
    click(driver, By.ID, "signin")
    assert driver.current_url == f"{console_url}/", (driver.current_url, page_text(driver))
