"""The bare baseline: Starlette + one psycopg pool, no FastAPI, no ORM.

Serve with `uvicorn bench.baseline:app`; `BENCH_DATABASE_URL` names the database.
`POST /insert` stores the JSON body as one row; `GET /select?id=` reads one row by key.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

POOL_SIZE = 20  # gengate's default db_pool_size
SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_item (
    id text PRIMARY KEY,
    payload text NOT NULL,
    created_at bigint NOT NULL
)
"""

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/gengate_bench"


def _pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


async def insert(request: Request) -> JSONResponse:
    body = await request.body()
    try:
        json.loads(body)
    except ValueError:
        return JSONResponse({"error": "body must be JSON"}, status_code=400)
    item_id = secrets.token_hex(12)
    async with _pool(request).connection() as conn:
        await conn.execute(
            "INSERT INTO bench_item (id, payload, created_at) VALUES (%s, %s, %s)",
            (item_id, body.decode(), int(time.time() * 1000)),
        )
    return JSONResponse({"id": item_id})


async def select(request: Request) -> JSONResponse:
    item_id = request.query_params.get("id", "")
    async with _pool(request).connection() as conn:
        cur = await conn.execute(
            "SELECT id, payload, created_at FROM bench_item WHERE id = %s", (item_id,)
        )
        row = await cur.fetchone()
    if row is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse({"id": row[0], "payload": row[1], "created_at": row[2]})


async def readyz(request: Request) -> JSONResponse:
    async with _pool(request).connection() as conn:
        await conn.execute("SELECT 1")
    return JSONResponse({"status": "ready"})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    async with AsyncConnectionPool(url, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False) as pool:
        await pool.wait()
        async with pool.connection() as conn:
            await conn.execute(SCHEMA)
        app.state.pool = pool
        yield


app = Starlette(
    routes=[
        Route("/insert", insert, methods=["POST"]),
        Route("/select", select, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ],
    lifespan=lifespan,
)
