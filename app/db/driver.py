"""PostgreSQL: the statements every request runs, on psycopg's own pool instead of the engine.

Measured with `make bench`: recordInfo over a stream of tasks answers half again as many
requests when its read runs here rather than on an engine connection. The engine's checkout,
its greenlet hops and its result machinery cost more than the read itself. So the few
statements on the hot paths (recordInfo's reads, createTask's one-statement create) run here:
in autocommit, each statement its own transaction (as app.db.engine.standalone), prepared on
each connection. They are still SQLAlchemy Core statements, compiled once for PostgreSQL.

Broken connections: a connection idle a while is pinged before use, as the engine's are. One
that breaks while busy fails its request (a 503) and takes the whole pool with it, as the
engine does on a disconnect. Until a new pool is open, which is retried in the background,
`statements` hands out engine connections, so an outage is answered as fast as elsewhere and
the end of one is seen at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.expression import ClauseElement

from app.core.outages import is_outage
from app.db.engine import (
    CONNECT_TIMEOUT_SECONDS,
    IDLE_PING_SECONDS,
    Reader,
    libpq_conninfo,
    standalone,
)

log = logging.getLogger(__name__)

_DIALECT = postgresql.psycopg.dialect()
Params = Mapping[str, Any] | None
# How long a request waits for a free connection, as the engine's pool does by default.
CHECKOUT_TIMEOUT_SECONDS = 30.0
# A lost pool is opened again after this long, then after twice as long, up to the cap.
REOPEN_FIRST_SECONDS = 0.5
REOPEN_MAX_SECONDS = 5.0
# Statements are compiled once each, keyed by identity: the hot paths' are module constants.
# A statement built per call would be compiled per call; the bound keeps that from growing.
COMPILED_MAX = 256
# How its connections show in pg_stat_activity.
APPLICATION_NAME = "gengate-driver"


class Rows:
    """A statement's rows, read in full: the part of SQLAlchemy's Result the query layers
    use, so a query function runs on a session, an engine connection or this pool alike."""

    __slots__ = ("_keys", "_rows")

    def __init__(self, keys: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        self._keys, self._rows = keys, rows

    def first(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def all(self) -> list[tuple[Any, ...]]:
        return self._rows

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def mappings(self) -> list[dict[str, Any]]:
        return [dict(zip(self._keys, row, strict=True)) for row in self._rows]


class _Compiled:
    __slots__ = ("compiled", "defaults", "keys", "sql")

    def __init__(self, statement: ClauseElement) -> None:
        self.compiled = statement.compile(dialect=_DIALECT)
        self.sql = str(self.compiled)
        if "POSTCOMPILE" in self.sql:
            raise TypeError("a statement with an expanding IN needs compiling per call")
        # The scalar defaults of columns an INSERT leaves out, which the engine would fill in
        # when it executes the statement.
        self.defaults: dict[str, Any] = {}
        for column in getattr(self.compiled, "insert_prefetch", ()):
            default = column.default
            if default is None or not default.is_scalar:
                raise TypeError(f"column {column.key}: only a scalar default runs here")
            self.defaults[column.key] = default.arg
        # The result's column names, read from the first execution's description (psycopg
        # builds that anew on every access, which costs more than the row itself).
        self.keys: list[str] | None = None

    def values(self, params: Params) -> dict[str, Any]:
        """The statement's parameters: the caller's, the columns' defaults and the values
        the statement carries itself (a LIMIT). Raises InvalidRequestError for one missing."""
        values = self.compiled.construct_params({**self.defaults, **(params or {})})
        return dict(values or {})


class DriverPool:
    """A psycopg pool in autocommit for statements that each stand alone. Use `statements`
    to get it, or an engine connection while it is down."""

    def __init__(self, conninfo: str, *, size: int) -> None:
        self._conninfo, self._size = conninfo, size
        self._pool: AsyncConnectionPool | None = None
        self._compiled: dict[ClauseElement, _Compiled] = {}
        self._idle_since: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._reopening: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(cls, database_url: str, *, size: int) -> DriverPool:
        """The pool for a PostgreSQL URL (any SQLAlchemy driver name), open; or, when the
        database cannot be reached, opened in the background, so an outage does not stop the
        process starting."""
        driver = cls(libpq_conninfo(database_url), size=size)
        try:
            driver._pool = await driver._new_pool()
        except psycopg.OperationalError as exc:
            log.warning("database unreachable: hot statements use the engine until it is back")
            log.debug("database pool not open: %s", exc)
            driver._reopening = asyncio.create_task(driver._reopen(), name=APPLICATION_NAME)
        return driver

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def execute(self, statement: ClauseElement, params: Params = None) -> Rows:
        """Run one statement (its own transaction) and read its rows. Raises psycopg.Error."""
        pool = self._pool
        if pool is None:
            raise psycopg.OperationalError("the database pool is reconnecting")
        compiled = self._compiled.get(statement)
        if compiled is None:
            if len(self._compiled) >= COMPILED_MAX:
                del self._compiled[next(iter(self._compiled))]
            compiled = self._compiled[statement] = _Compiled(statement)
        values = compiled.values(params)
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute(compiled.sql, values, prepare=True)
                if compiled.keys is None:
                    description = cursor.description or ()
                    compiled.keys = [column.name for column in description]
                rows = await cursor.fetchall() if compiled.keys else []
                # Noted here rather than in a pool `reset` callback, which would send every
                # return through one of the pool's worker tasks.
                self._idle_since[conn] = time.monotonic()
                return Rows(compiled.keys, rows)
        except psycopg.Error as exc:
            if is_outage(exc):
                self._lose(pool)
            raise

    def follow(self, engine: AsyncEngine) -> None:
        """Share the engine's view of the database: when one of its connections breaks
        (it then replaces them all), replace this pool too, whose connections went through
        the same outage without a request noticing yet."""

        @event.listens_for(engine.sync_engine, "handle_error")
        def _on_error(context: ExceptionContext) -> None:
            if context.is_disconnect and self._pool is not None:
                self._lose(self._pool)

    async def scalar(self, statement: ClauseElement, params: Params = None) -> Any:
        return (await self.execute(statement, params)).scalar()

    async def close(self) -> None:
        self._closed = True
        if self._reopening is not None:
            self._reopening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopening
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # --- connections ---------------------------------------------------------------------

    async def _new_pool(self) -> AsyncConnectionPool:
        """A pool with every connection open. Raises psycopg.OperationalError.

        One connection is tried first, so a database that is down costs one refused (or
        timed out) connect, not the pool's own retries and their log lines."""
        probe = await psycopg.AsyncConnection.connect(
            self._conninfo, connect_timeout=CONNECT_TIMEOUT_SECONDS
        )
        await probe.close()
        pool = AsyncConnectionPool(
            self._conninfo,
            min_size=self._size,
            max_size=self._size,
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "application_name": APPLICATION_NAME,
            },
            check=self._ping_when_idle,
            timeout=CHECKOUT_TIMEOUT_SECONDS,
            name=APPLICATION_NAME,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except BaseException:
            await pool.close()
            raise
        return pool

    async def _ping_when_idle(self, conn: psycopg.AsyncConnection[Any]) -> None:
        idle_since = self._idle_since.get(conn)
        if idle_since is not None and time.monotonic() - idle_since >= IDLE_PING_SECONDS:
            await conn.execute("")  # raises if the connection is gone; the pool replaces it

    def _lose(self, pool: AsyncConnectionPool) -> None:
        """Drop a pool whose connection broke (its siblings most likely did too) and open a
        new one in the background; meanwhile `statements` uses the engine."""
        if self._pool is not pool or self._closed:
            return
        self._pool = None
        log.warning("database connection lost: hot statements use the engine until it is back")
        self._reopening = asyncio.create_task(self._reopen(pool), name=APPLICATION_NAME)

    async def _reopen(self, lost: AsyncConnectionPool | None = None) -> None:
        if lost is not None:
            await lost.close()
        delay = REOPEN_FIRST_SECONDS
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                pool = await self._new_pool()
            except psycopg.OperationalError as exc:  # down still: try again a little later
                log.debug("database pool not open yet: %s", exc)
                delay = min(delay * 2, REOPEN_MAX_SECONDS)
                continue
            self._pool = pool
            log.info("database connection back: hot statements use their own pool again")
            return


@asynccontextmanager
async def statements(engine: AsyncEngine, driver: DriverPool | None) -> AsyncIterator[Reader]:
    """Where statements that each stand alone run: the driver's pool while it is open, else an
    engine connection (app.db.engine.standalone; on SQLite one transaction, which the caller
    commits if it wrote)."""
    if driver is not None and driver.is_open:
        yield driver
        return
    async with standalone(engine) as conn:
        yield conn
