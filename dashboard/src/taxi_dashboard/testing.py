"""For tests that look at the dashboard in a real browser: Debian's Chromium, driven by
Playwright. The browser tests of the dashboard and of `taxi lifecycle` share these.

Screenshots go to $TAXI_TEST_ARTIFACTS, or else <repo>/test-artifacts/ (CI lists the PNGs
there). Like taxi_kafka.testing, this needs the dev dependencies (pytest, playwright); nothing
in the dashboard imports it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous: the page's first paint waits for Streamlit's scripts, on a machine shared with
# several Kafka clusters. Nothing here asserts a timing.
PAINT_TIMEOUT_MS = 240_000
ARTIFACTS_ENV = "TAXI_TEST_ARTIFACTS"
# dashboard/src/taxi_dashboard/testing.py: the repository is three folders up.
REPOSITORY = Path(__file__).resolve().parents[3]
SERVER_WAIT_S = 120.0


def artifacts_dir() -> Path:
    configured = os.environ.get(ARTIFACTS_ENV)
    directory = Path(configured) if configured else REPOSITORY / "test-artifacts"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    path = artifacts_dir() / name
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium; the test is skipped on a machine without one."""
    if not CHROMIUM.exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(
    browser: Browser,
    url: str,
    *,
    offline: bool = False,
    wait_s: float = SERVER_WAIT_S,
    height: int = 1900,
) -> Page:
    """A page `height` pixels tall at `url`, retried for `wait_s` seconds until the server
    listens."""
    page = browser.new_page(viewport={"width": 1500, "height": height})
    if offline:
        # Only the dashboard answers (no Carto tiles): what a user without internet sees.
        page.route(lambda address: not address.startswith(url), lambda route: route.abort())
    deadline = time.monotonic() + wait_s
    while True:  # until the server listens
        try:
            page.goto(url)
            return page
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def assert_no_exception(page: Page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0


def grid_texts(page: Page, key: str) -> list[str]:
    """The cells of a keyed table, row by row (the grid draws on a canvas; its cells are in the
    accessibility tree behind it)."""
    return [
        text.strip() for text in page.locator(f".st-key-{key} [role=gridcell]").all_inner_texts()
    ]
