"""API keys never appear in plain text in the database or in the server's logs."""

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.db.migrate import sync_url
from app.db.models import metadata
from app.runtime import Runtime
from tests.conftest import make_customer
from tests.support.server import LiveServer, start_server


@pytest.fixture
def live_server(settings_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server({**settings_env, "GENGATE_LOG_LEVEL": "DEBUG"}, tmp_path)
    yield server
    server.stop()


def _dump_database(url: str) -> str:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return "\n".join(
                repr(row)
                for table in metadata.sorted_tables
                for row in conn.execute(text(f"SELECT * FROM {table.name}"))
            )
    finally:
        engine.dispose()


async def test_keys_stay_out_of_database_and_logs(
    runtime: Runtime, live_server: LiveServer, database_url: str
) -> None:
    customer = await make_customer(runtime)
    async with httpx.AsyncClient(base_url=live_server.base_url) as http:
        assert (await http.get("/api/v1/account", headers=customer.headers)).status_code == 200
        created = await http.post("/api/v1/keys", headers=customer.headers, json={"name": "ci"})
        minted = created.json()["data"]["key"]
        wrong = customer.key[:-4] + "AAAA"
        denied = await http.get("/api/v1/account", headers={"Authorization": f"Bearer {wrong}"})
        assert denied.status_code == 401
        await http.get(f"/api/v1/account?api_key={minted}")  # a key misplaced in a URL
    live_server.stop()

    dump = _dump_database(database_url)
    assert customer.account.id in dump  # the dump really holds the rows
    log = live_server.log()
    assert "GET /api/v1/account" in log  # the log really holds the requests
    assert "sk_[redacted]" in log  # the misplaced key was caught, not just absent
    for secret in (customer.key, minted, wrong):
        assert secret not in dump
        assert secret[3:] not in log
        assert secret[3:] not in live_server.stdout()


def test_make_run_path_prints_a_dev_key_once(tmp_path: Path) -> None:
    """`gengate serve` in development: migrate, make a dev key, show it once on stdout."""
    # Empty values switch off whatever the test run's environment would bring in.
    env = {
        "GENGATE_ENV": "development",
        "GENGATE_VAR_DIR": str(tmp_path / "var"),
        "GENGATE_DATABASE_URL": "",
        "GENGATE_REDIS_URL": "",
        "GENGATE_SIGNING_SECRET": "",
    }
    server = start_server(env, tmp_path)
    try:
        key = (tmp_path / "var" / "dev-api-key").read_text().strip()
        assert key in server.stdout()
        response = httpx.get(
            server.base_url + "/api/v1/account", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200 and response.json()["data"]["balance"] > 0
    finally:
        server.stop()
    assert key not in server.log()
    assert (tmp_path / "var" / "gengate.db").exists()
    assert os.stat(tmp_path / "var" / "dev-api-key").st_mode & 0o077 == 0

    again = start_server(env, tmp_path)
    again.stop()
    assert key not in again.stdout() and "dev-api-key" in again.stdout()
