"""The hot statements' own pool (app.db.driver): on PostgreSQL recordInfo reads through it;
a broken connection takes the whole pool down, the engine serves meanwhile, and the pool
comes back on its own; a database that is down at start does not stop the process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import Integer, literal, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db import driver as driver_module
from app.db.driver import APPLICATION_NAME, DriverPool, Rows, statements
from app.db.engine import create_engine
from tests.conftest import make_customer
from tests.faults.conftest import CREATE, assert_unavailable, runtime_of
from tests.support.apps import eventually
from tests.support.faultproxy import FaultProxy

_ONE = select(literal(1).label("one"))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


async def _terminate_driver_connections(direct_url: str) -> int:
    """End, from the server's side, every connection the driver pools hold."""
    conninfo = make_url(direct_url).set(drivername="postgresql")
    async with await psycopg.AsyncConnection.connect(
        conninfo.render_as_string(hide_password=False), autocommit=True
    ) as admin:
        cursor = await admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()",
            (APPLICATION_NAME,),
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _is_open(driver: DriverPool) -> bool:
    return driver.is_open


async def test_record_info_reads_through_the_driver_pool(
    faulty: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = faulty
    runtime = runtime_of(app)
    assert runtime.driver is not None and runtime.driver.is_open
    customer = await make_customer(runtime)
    created = await client.post("/api/v1/jobs/createTask", json=CREATE, headers=customer.headers)
    task_id = created.json()["data"]["taskId"]
    ran: list[str] = []
    run = runtime.driver.execute

    async def execute(statement: Any, params: Any = None) -> Rows:
        ran.append(str(statement))
        return await run(statement, params)

    runtime.driver.execute = execute  # type: ignore[method-assign]
    runtime.task_views.changed(task_id)  # not from memory: this read must reach the database
    answer = await client.get(
        "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=customer.headers
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["taskId"] == task_id
    assert any("FROM task" in sql for sql in ran), ran


async def test_a_broken_connection_fails_once_then_the_engine_serves_till_the_pool_is_back(
    engine: AsyncEngine, database_url: str, postgres_template: str
) -> None:
    driver = await DriverPool.open(database_url, size=2)
    try:
        assert driver.is_open
        assert (await driver.execute(_ONE)).scalar() == 1
        # The proxy is in front of the app only; the admin connection goes straight in.
        assert await _terminate_driver_connections(postgres_template) >= 1

        with pytest.raises(psycopg.OperationalError):
            await driver.execute(_ONE)
        assert not driver.is_open
        async with statements(engine, driver) as db:
            assert isinstance(db, AsyncConnection)
            assert await db.scalar(_ONE) == 1

        await eventually(lambda: _is_open(driver), within_s=20, what="the pool to reopen")
        async with statements(engine, driver) as db:
            assert db is driver
            assert await db.scalar(_ONE) == 1
    finally:
        await driver.close()


async def test_a_disconnect_the_engine_sees_replaces_the_pool_too(
    engine: AsyncEngine, database_url: str, db_proxy: FaultProxy
) -> None:
    driver = await DriverPool.open(database_url, size=2)
    driver.follow(engine)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(_ONE) == 1
        await db_proxy.cut()
        with pytest.raises(Exception):  # noqa: B017 - whichever way the engine reports it
            async with engine.connect() as conn:
                await conn.scalar(_ONE)
        assert not driver.is_open
        await db_proxy.restore()
        await eventually(lambda: _is_open(driver), within_s=20, what="the pool to reopen")
        assert (await driver.execute(_ONE)).scalar() == 1
    finally:
        await driver.close()


async def test_a_database_down_at_start_leaves_the_engine_serving_until_it_is_up(
    engine: AsyncEngine, database_url: str, db_proxy: FaultProxy
) -> None:
    await db_proxy.cut()
    driver = await DriverPool.open(database_url, size=2)
    try:
        assert not driver.is_open
        await db_proxy.restore()
        async with statements(engine, driver) as db:
            if db is not driver:  # the pool may already be back; else the engine serves
                assert await db.scalar(_ONE) == 1
        await eventually(lambda: _is_open(driver), within_s=20, what="the pool to open")
        assert (await driver.execute(_ONE)).scalar() == 1
    finally:
        await driver.close()


async def test_an_idle_connection_is_pinged_and_replaced_before_use(
    database_url: str, postgres_template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver_module, "IDLE_PING_SECONDS", 0.0)  # every checkout is "idle"
    driver = await DriverPool.open(database_url, size=2)
    try:
        for _ in range(2):  # each connection used once, so each has been idle since
            assert (await driver.execute(_ONE)).scalar() == 1
        assert await _terminate_driver_connections(postgres_template) >= 1
        assert (await driver.execute(_ONE)).scalar() == 1  # no request saw the breakage
        assert driver.is_open
    finally:
        await driver.close()


async def test_a_statement_runs_with_the_values_it_carries(database_url: str) -> None:
    """A LIMIT or a literal is a parameter the statement holds, not the caller."""
    driver = await DriverPool.open(database_url, size=1)
    try:
        numbers = text("SELECT n FROM generate_series(1, 5) AS n").columns(n=Integer).subquery()
        first_two = select(numbers.c.n, literal("x").label("tag")).order_by(numbers.c.n).limit(2)
        rows = await driver.execute(first_two)
        assert rows.all() == [(1, "x"), (2, "x")]
        assert rows.mappings() == [{"n": 1, "tag": "x"}, {"n": 2, "tag": "x"}]
        assert rows.first() == (1, "x") and rows.scalar() == 1
        with pytest.raises(TypeError, match="expanding IN"):
            await driver.execute(select(numbers.c.n).where(numbers.c.n.in_([1, 2])))
    finally:
        await driver.close()


async def test_the_app_answers_503_not_500_when_the_driver_pool_breaks(
    faulty: tuple[FastAPI, httpx.AsyncClient], postgres_template: str
) -> None:
    app, client = faulty
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    created = await client.post("/api/v1/jobs/createTask", json=CREATE, headers=customer.headers)
    task_id = created.json()["data"]["taskId"]
    assert await _terminate_driver_connections(postgres_template) >= 1
    codes = []
    for _ in range(3):
        runtime.task_views.changed(task_id)
        answer = await client.get(
            "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=customer.headers
        )
        if answer.status_code != 200:
            assert_unavailable(answer)
        codes.append(answer.status_code)
    assert codes[1:] == [200, 200], codes  # at most the first read met the breakage
