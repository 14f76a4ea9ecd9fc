"""Console test helpers: a live server with customers seeded into its database, and the
sign-in form driven over HTTP for in-process tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from app.db.engine import create_engine, create_session_factory
from tests.conftest import Customer, gengate_env, make_customer_in
from tests.support.backends import fresh_database
from tests.support.server import LiveServer, start_server

_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
T = TypeVar("T")


@dataclass
class ConsoleServer:
    """A `gengate serve` process on a database of the module's own."""

    server: LiveServer
    database_url: str
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def customer(self, **kwargs: Any) -> Customer:
        """A new account with credits and a key (make_customer's arguments)."""
        return run_async(_seed_customer(self.database_url, **kwargs))


@contextmanager
def console_serving(
    template_database_url: str, workdir: Path, *, env: dict[str, str] | None = None
) -> Iterator[ConsoleServer]:
    """A real server on a database of its own (emptied from the migrated template), with
    the test environment plus `env`; stopped when the block ends. For module- or
    package-scoped fixtures of browser tests."""
    database_url = fresh_database(template_database_url, workdir)
    full_env = gengate_env(database_url, workdir / "var") | (env or {})
    # A module's tests all wait on this start: on a loaded host it can take a while.
    server = start_server(full_env, workdir, ready_within_s=90)
    try:
        yield ConsoleServer(server, database_url, full_env)
    finally:
        server.stop()


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end from synchronous code, in a thread of its own: Playwright's sync
    API keeps an event loop running in the test's thread, so asyncio.run cannot run there."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


async def _seed_customer(database_url: str, **kwargs: Any) -> Customer:
    engine = create_engine(database_url, pool_size=1)
    try:
        return await make_customer_in(create_session_factory(engine), **kwargs)
    finally:
        await engine.dispose()


def csrf_of(page: str) -> str:
    """The CSRF token of the first form in a console page."""
    found = _CSRF_INPUT.search(page)
    assert found, "no csrf_token input in the page"
    return found.group(1)


async def console_sign_in(client: httpx.AsyncClient, key: str) -> str:
    """Sign `client` in (its cookie jar keeps the session); returns the session's CSRF token."""
    login = await client.get("/console/login")
    answer = await client.post(
        "/console/login", data={"api_key": key, "csrf_token": csrf_of(login.text)}
    )
    assert answer.status_code == 303, answer.text
    home = await client.get("/console")
    assert home.status_code == 200, home.text
    return csrf_of(home.text)


def console_cookie(client: httpx.AsyncClient) -> str:
    token = client.cookies.get("gengate_console")
    assert token
    return str(token)
