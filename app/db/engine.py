"""Engine and session factory for SQLite (embedded) and PostgreSQL (scaled out)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import event, exc, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool

from app.db.hooks import AppSession, Listener, session_info

if TYPE_CHECKING:
    from app.db.driver import DriverPool

SessionFactory = async_sessionmaker[AsyncSession]
# What a query layer runs its Core statements on: a session, a bare connection, or on
# PostgreSQL the driver's pool (app.db.driver; each statement its own transaction).
Reader: TypeAlias = "AsyncSession | AsyncConnection | DriverPool"


# A pooled connection idle this long is pinged before use; a busy one is not (SQLAlchemy's
# pool_pre_ping would add a round trip to every request).
IDLE_PING_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5


def libpq_conninfo(database_url: str) -> str:
    """A PostgreSQL URL as psycopg's own connections take it (no SQLAlchemy driver name),
    for the connections that live outside the engine (app.db.driver, app.jobs.pgnotify)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 20) -> AsyncEngine:
    if url.startswith("sqlite"):
        return _create_sqlite_engine(url)
    # A fixed pool: under load, requests wait for a connection instead of opening (and on
    # return closing) overflow connections, which cost more than the queries.
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_recycle=1800,
        # A server that drops packets instead of refusing would otherwise hold a request
        # (or a worker) for the kernel's TCP timeout, minutes, before it becomes a 503.
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Pessimistic disconnect handling for connections that sat in the pool a while (after
    a database restart, say); the pool replaces one that fails the ping. A connection that
    breaks while busy fails its request, and SQLAlchemy then replaces the whole pool."""
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return  # new, or in use a moment ago
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as error:
            raise exc.DisconnectionError() from error


@asynccontextmanager
async def standalone(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection, with no ORM session, for statements that each stand alone: on PostgreSQL
    in autocommit (every statement its own transaction and snapshot, with no BEGIN and
    COMMIT round trips around it); on SQLite in one transaction as usual, which the caller
    commits if it wrote."""
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


@asynccontextmanager
async def transaction(sessions: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A session whose transaction commits when the block ends without an error."""
    async with sessions() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            # The commit itself may be what failed (the database went away after the
            # block); a rollback that fails too must not hide that error from the caller.
            with contextlib.suppress(Exception):
                await session.rollback()
            raise


def _create_sqlite_engine(url: str) -> AsyncEngine:
    # One connection: in this process, transactions queue for it without blocking the event
    # loop, instead of spinning in SQLite's busy handler. Other processes sharing the file
    # still wait on busy_timeout. The rule that follows: never await slow work inside a session.
    engine = create_async_engine(
        url,
        poolclass=AsyncAdaptedQueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=60,
        connect_args={"timeout": 30},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # SQLite is the single writer: taking the write lock at BEGIN means a transaction
        # never fails half-way when it upgrades from reading to writing; others wait on
        # busy_timeout instead. Sessions are kept short so this costs little.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_session_factory(
    engine: AsyncEngine, *, listeners: dict[str, Listener] | None = None
) -> SessionFactory:
    """`listeners`: topic -> callback, for announce_after_commit (see app.db.hooks)."""
    return async_sessionmaker(
        engine,
        expire_on_commit=False,
        autoflush=False,
        sync_session_class=AppSession,
        info=session_info(listeners or {}),
    )
