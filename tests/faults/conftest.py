"""Outage tests: the app talks to PostgreSQL and Redis through a FaultProxy the test cuts.

A database outage needs a database server, so these tests always use PostgreSQL: the
suite's own database on the PostgreSQL run, and on the SQLite run a database of their own
on the local server (GENGATE_FAULTS_POSTGRES_URL names the server; the run's CI starts one).
Redis is the suite's Redis, or the local one on the SQLite run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import make_url

from app.core.config import Settings
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.support.apps import running_app
from tests.support.backends import TEST_REDIS_URL, fresh_database
from tests.support.faultproxy import FaultProxy
from tests.support.postgres import postgres_template as migrated_postgres

# Every test here is bounded: an outage that makes something hang must fail the test.
pytestmark = pytest.mark.timeout(90)

REDIS_URL = TEST_REDIS_URL or os.environ.get("GENGATE_FAULTS_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def postgres_template(template_database_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database: the suite's on the PostgreSQL run, else our own."""
    with migrated_postgres(template_database_url, name="gengate_faults") as url:
        yield url


def _through(url: str, proxy: FaultProxy) -> str:
    return (
        make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    )


@pytest.fixture
async def db_proxy(postgres_template: str, tmp_path: Path) -> AsyncIterator[FaultProxy]:
    url = make_url(fresh_database(postgres_template, tmp_path))
    proxy = FaultProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def redis_proxy() -> AsyncIterator[FaultProxy]:
    url = make_url(REDIS_URL)
    proxy = FaultProxy(url.host or "127.0.0.1", url.port or 6379)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
def database_url(postgres_template: str, db_proxy: FaultProxy) -> str:
    """Overrides the suite's: the app reaches its database only through the proxy."""
    return _through(postgres_template, db_proxy)


@pytest.fixture
def fault_settings(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The suite's settings, with a long enough lease that only the outage is at play."""
    for name, value in {**settings_env, "GENGATE_LEASE_SECONDS": "30"}.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture
async def faulty(fault_settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with running_app(fault_settings) as running:
        yield running


@pytest.fixture
async def redis_faulty(
    settings_env: dict[str, str], redis_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    redis_url = make_url(REDIS_URL).set(host="127.0.0.1", port=redis_proxy.port)
    env = {**settings_env, "GENGATE_REDIS_URL": redis_url.render_as_string(hide_password=False)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    async with running_app(Settings(_env_file=None)) as running:  # type: ignore[call-arg]
        yield running


UNAVAILABLE = {"error": "service temporarily unavailable", "retryAfter": 5}
CREATE = {"model": "gpt-image-2-text-to-image", "input": {"prompt": "A red bicycle"}}


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"code": 503, "msg": UNAVAILABLE["error"], "data": UNAVAILABLE}


async def mcp_call(
    client: httpx.AsyncClient, customer: Customer, tool: str, arguments: dict[str, Any]
) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    headers = {**customer.headers, "Content-Type": "application/json"}
    return await client.post("/api/mcp", content=json.dumps(body), headers=headers)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def worker_log() -> Iterator[Records]:
    records = Records()
    logger = logging.getLogger("gengate.worker")
    logger.addHandler(records)
    yield records
    logger.removeHandler(records)


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


async def create_slow_task(client: httpx.AsyncClient, runtime: Runtime) -> tuple[Customer, str]:
    """A customer and a task whose render takes long enough to cut the database meanwhile."""
    customer = await make_customer(runtime)
    body = {
        "model": "gpt-image-2-text-to-image",
        "input": {"prompt": "A red bicycle [[delay:1500]]"},
    }
    created = await client.post("/api/v1/jobs/createTask", json=body, headers=customer.headers)
    assert created.status_code == 200, created.text
    return customer, created.json()["data"]["taskId"]
