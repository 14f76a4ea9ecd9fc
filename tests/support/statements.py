"""The SQL a test's own requests run, on the engine and on the driver's pool alike."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.expression import ClauseElement

from app.db.driver import Rows
from app.runtime import Runtime


@contextmanager
def statements(runtime: Runtime) -> Iterator[list[str]]:
    """The SQL statements the runtime runs meanwhile for the calling asyncio task (the
    requests it sends through the ASGI transport), not for the app's background work: those
    on its engine and, on PostgreSQL, those on its driver pool (app.db.driver)."""
    seen: list[str] = []
    caller = asyncio.current_task()

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if asyncio.current_task() is caller:
            seen.append(statement)

    engine = runtime.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    driver = runtime.driver
    if driver is not None:
        run = driver.execute

        async def execute(statement: ClauseElement, params: Any = None) -> Rows:
            if asyncio.current_task() is caller:
                seen.append(str(statement.compile(dialect=postgresql.psycopg.dialect())))
            return await run(statement, params)

        driver.execute = execute  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
        if driver is not None:
            del driver.execute  # type: ignore[method-assign]
