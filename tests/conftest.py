from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.accounts.models import Account
from app.accounts.service import create_account
from app.core.config import Settings
from app.db.engine import SessionFactory
from app.keys.service import create_api_key
from app.runtime import Runtime
from tests.support.apps import running_app
from tests.support.backends import TEST_REDIS_URL, fresh_database, prepare_template


@pytest.fixture(scope="session")
def template_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return prepare_template(tmp_path_factory.mktemp("template"))


@pytest.fixture
def database_url(template_database_url: str, tmp_path: Path) -> str:
    return fresh_database(template_database_url, tmp_path)


@pytest.fixture
def settings_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment a gengate process of this test runs with (also for subprocesses)."""
    return gengate_env(database_url, tmp_path / "var")


def gengate_env(database_url: str, var_dir: Path) -> dict[str, str]:
    """The test environment of a gengate process on `database_url`."""
    env = {
        "GENGATE_ENV": "test",
        "GENGATE_DATABASE_URL": database_url,
        "GENGATE_VAR_DIR": str(var_dir),
        "GENGATE_SIGNING_SECRET": "test-signing-secret-" + uuid.uuid4().hex,
        "GENGATE_REDIS_PREFIX": "gengate-test-" + uuid.uuid4().hex[:12],
        "GENGATE_LOCAL_FAULT_INJECTION": "true",
        "GENGATE_ALLOWED_HOSTS": '["127.0.0.1", "localhost", "testserver"]',
        "GENGATE_SCAN_INTERVAL_SECONDS": "0.2",
        "GENGATE_RETRY_BACKOFF_SECONDS": "0.1",
    }
    if TEST_REDIS_URL:
        env["GENGATE_REDIS_URL"] = TEST_REDIS_URL
    return env


@pytest.fixture
def settings(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as (application, _client):
        yield application


@pytest.fixture
async def idle_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app without workers: created tasks stay queued (and callbacks unsent) until a
    test runs a worker."""
    async with running_app(settings.model_copy(update={"workers_in_process": False})) as pair:
        yield pair


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


class Customer:
    """An account with credits and a full-scope key, as most tests need."""

    def __init__(self, account: Account, key: str) -> None:
        self.account = account
        self.key = key
        self.headers = {"Authorization": f"Bearer {key}"}


async def make_customer(
    runtime: Runtime,
    *,
    credits: int = 1000,
    tier: str = "standard",
    scopes: list[str] | None = None,
) -> Customer:
    return await make_customer_in(runtime.sessions, credits=credits, tier=tier, scopes=scopes)


async def make_customer_in(
    sessions: SessionFactory,
    *,
    credits: int = 1000,
    tier: str = "standard",
    scopes: list[str] | None = None,
) -> Customer:
    """make_customer on a session factory of its own (a database a server process serves)."""
    async with sessions() as session:
        account = await create_account(session, name="customer", credits=credits)
        _key, plain = await create_api_key(
            session, account_id=account.id, name="test", tier=tier, scopes=scopes
        )
        await session.commit()
    return Customer(account, plain)


@pytest.fixture
async def customer(runtime: Runtime) -> Customer:
    return await make_customer(runtime)
