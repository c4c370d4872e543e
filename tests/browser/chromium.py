"""Debian's Chromium, driven by Playwright (which cannot download browsers here)."""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.conftest import require_service

INSTALL = "apt-get install chromium (Debian), then pip install -e '.[test]' for Playwright"
# Chromium's own background traffic finds no network here and only slows it down.
FLAGS = [
    "--no-sandbox",  # tests may run as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Chrome 142+ keeps pages without an address of their own (a blank tab) from reaching
# local addresses unless the user allows it; this stands for that "Allow".
ALLOW_LOCAL_NETWORK = "--disable-features=LocalNetworkAccessChecks"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium(*extra_flags: str) -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``); skips where there is none."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    found = path is not None and sync_playwright is not None
    require_service("Chromium with Playwright", found, INSTALL)
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=[*FLAGS, *extra_flags])
        try:
            yield browser
        finally:
            browser.close()
