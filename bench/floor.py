"""The stack's floor: FastAPI serving the baseline's PK SELECT through each layer gengate uses.

Not gengate: the same one-row read as bench.baseline's `GET /select`, once with raw psycopg,
once through a SQLAlchemy Core connection, once through a SQLAlchemy AsyncSession dependency
(the pattern gengate's routes use). It shows how much of the gap to the bare baseline the
framework and the ORM take before gengate's own work (auth, limits, envelope) begins.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bench.baseline import DEFAULT_URL, POOL_SIZE

_SQL = "SELECT id, payload, created_at FROM bench_item WHERE id = %s"
_QUERY = text("SELECT id, payload, created_at FROM bench_item WHERE id = :id")


def _answer(row: Any) -> JSONResponse:
    if row is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse({"id": row[0], "payload": row[1], "created_at": row[2]})


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    engine = create_async_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1),
        pool_size=POOL_SIZE,
        max_overflow=0,
    )
    async with AsyncConnectionPool(url, min_size=POOL_SIZE, max_size=POOL_SIZE) as pool:
        app.state.pool, app.state.engine = pool, engine
        app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
        yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session
        await session.commit()


@app.get("/raw")
async def raw(id: str, request: Request) -> JSONResponse:
    async with request.app.state.pool.connection() as conn:
        row = await (await conn.execute(_SQL, (id,))).fetchone()
    return _answer(row)


@app.get("/core")
async def core(id: str, request: Request) -> JSONResponse:
    async with request.app.state.engine.connect() as conn:
        row = (await conn.execute(_QUERY, {"id": id})).first()
    return _answer(row)


@app.get("/session")
async def session(
    id: str, db: Annotated[AsyncSession, Depends(_session, scope="function")]
) -> JSONResponse:
    return _answer((await db.execute(_QUERY, {"id": id})).first())


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}
