"""is_outage on real failures: a service that is away is an outage, a bad statement is not."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.errors import InvalidInput, ServiceUnavailable
from app.core.outages import is_outage, unavailable_on_outage
from tests.faults.conftest import REDIS_URL
from tests.support.server import free_port


async def _error_of(url: str, statement: str) -> SQLAlchemyError:
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    except SQLAlchemyError as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError(f"{statement!r} did not fail")


async def test_a_refused_database_connection_is_an_outage() -> None:
    port = free_port()  # nothing listens there
    error = await _error_of(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x", "SELECT 1")
    assert is_outage(error)
    assert isinstance(error.orig, psycopg.OperationalError)
    assert is_outage(error.orig)


async def test_bad_statements_are_not_outages(postgres_template: str, tmp_path: Path) -> None:
    for statement in ("SELEC 1", "SELECT 1/0", "SELECT 'a\x00b'"):
        assert not is_outage(await _error_of(postgres_template, statement)), statement
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'bad.db'}"
    assert not is_outage(await _error_of(sqlite_url, "SELECT * FROM missing"))


async def test_no_pooled_connection_in_time_is_an_outage(postgres_template: str) -> None:
    engine = create_async_engine(postgres_template, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        async with engine.connect():
            with pytest.raises(SQLAlchemyError) as raised:
                async with engine.connect():
                    pass
        assert is_outage(raised.value)
    finally:
        await engine.dispose()


def test_a_locked_sqlite_database_is_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError) as raised:
            other.execute("INSERT INTO t VALUES (1)")
        assert is_outage(raised.value)
        with pytest.raises(sqlite3.OperationalError) as bad:
            other.execute("SELECT * FROM missing")
        assert not is_outage(bad.value)
    finally:
        other.close()
        holder.close()


async def test_redis_away_is_an_outage_and_a_redis_refusal_is_not() -> None:
    gone = aioredis.Redis(port=free_port(), socket_connect_timeout=2)
    with pytest.raises(redis.exceptions.ConnectionError) as raised:
        await gone.ping()
    assert is_outage(raised.value)
    await gone.aclose()

    live = aioredis.from_url(REDIS_URL)
    try:
        with pytest.raises(redis.exceptions.ResponseError) as refused:
            await live.execute_command("NO-SUCH-COMMAND")
        assert not is_outage(refused.value)
    finally:
        await live.aclose()


async def test_the_rate_limiter_storage_away_is_an_outage() -> None:
    storage = RedisStorage(
        f"async+redis://127.0.0.1:{free_port()}/0", implementation="redispy", wrap_exceptions=True
    )
    limiter = SlidingWindowCounterRateLimiter(storage)
    with pytest.raises(Exception) as raised:
        await limiter.hit(parse("1 per 60 second"), "group", "key")
    assert is_outage(raised.value)


def test_groups_causes_and_the_translation() -> None:
    refused = ConnectionRefusedError("refused")
    assert is_outage(ExceptionGroup("all away", [refused, ConnectionResetError()]))
    assert not is_outage(ExceptionGroup("one bug", [refused, TypeError("bug")]))
    assert not is_outage(ValueError("bad"))
    assert not is_outage(InvalidInput("prompt is required"))

    with pytest.raises(ServiceUnavailable) as translated, unavailable_on_outage():
        raise refused
    assert translated.value.__cause__ is refused
    assert translated.value.payload() == {
        "error": "service temporarily unavailable",
        "retryAfter": 5,
    }
    with pytest.raises(KeyError), unavailable_on_outage():
        raise KeyError("a bug stays a bug")
