"""Headless Chromium for the console tests: the system's `chromium` (Debian's package,
installed by `make system-packages`) driven by Playwright, which downloads no browser.

The API is Playwright's sync one, so browser tests are plain `def` tests (the sync API
refuses to run inside a running event loop); one browser per test module is enough, each
test opening its own context (cookies) and page. `snap` saves a full-page screenshot as a
test artifact under GENGATE_TEST_ARTIFACTS (default `.artifacts/screenshots`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ARTIFACTS = REPO_ROOT / ".artifacts" / "screenshots"


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("chromium is not installed: run `make system-packages`")
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed when the block ends."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield browser
        finally:
            browser.close()


def artifacts_dir() -> Path:
    configured = os.environ.get("GENGATE_TEST_ARTIFACTS")
    return Path(configured) if configured else DEFAULT_ARTIFACTS


def snap(page: Page, name: str) -> Path:
    """Save a full-page PNG of `page` as `<name>.png` under the artifacts directory."""
    directory = artifacts_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, base_url: str, api_key: str, *, next_path: str | None = None) -> None:
    """Sign in through the console's form; returns on the page signed in to."""
    url = f"{base_url}/console/login" + (f"?next={next_path}" if next_path else "")
    page.goto(url)
    page.fill("input[name=api_key]", api_key)
    page.click("form[action='/console/login'] button[type=submit]")
    page.wait_for_selector("form.signout")
