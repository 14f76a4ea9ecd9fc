"""Fixtures of the console tests: a real server per browser test module and one Chromium per
module (see tests/support/browser.py and tests/support/console.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.support.browser import chromium
from tests.support.console import ConsoleServer, console_serving


@pytest.fixture(scope="module")
def console_server(
    template_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleServer]:
    """A real server for a module of browser tests (its tests share it and its database)."""
    # Callbacks may reach receivers on loopback (the webhooks page lists their deliveries).
    allow_loopback = {"GENGATE_OUTBOUND_ALLOWLIST": json.dumps(["127.0.0.1/32"])}
    workdir = tmp_path_factory.mktemp("console")
    with console_serving(template_database_url, workdir, env=allow_loopback) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched
