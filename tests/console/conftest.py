"""Fixtures of the console tests: a real server per browser test module and one Chromium per
module (see tests/support/browser.py and tests/support/console.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.conftest import gengate_env
from tests.support.backends import fresh_database
from tests.support.browser import chromium
from tests.support.console import ConsoleServer
from tests.support.server import start_server


@pytest.fixture(scope="module")
def console_server(
    template_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleServer]:
    """A real server for a module of browser tests (its tests share it and its database)."""
    workdir = tmp_path_factory.mktemp("console")
    database_url = fresh_database(template_database_url, workdir)
    # Callbacks may reach receivers on loopback (the webhooks page lists their deliveries).
    env = gengate_env(database_url, workdir / "var") | {
        "GENGATE_OUTBOUND_ALLOWLIST": json.dumps(["127.0.0.1/32"])
    }
    server = start_server(env, workdir)
    try:
        yield ConsoleServer(server, database_url, env)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched
