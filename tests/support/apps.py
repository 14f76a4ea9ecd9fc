"""Run the real app in-process for a test, and wait on conditions with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

from app.core.config import Settings
from app.jobs.worker import Worker
from app.main import create_app
from app.runtime import Runtime

T = TypeVar("T")


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan entered (runtime, embedded workers) and a client for it."""
    app = create_app(settings)
    async with hosted_lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


@asynccontextmanager
async def hosted_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Enter and leave the lifespan in one task of its own, as a server does.

    The MCP session managers hold anyio task groups, which must be left in the task that
    entered them; test fixtures may set up and tear down in different tasks.
    """
    started, stop = asyncio.Event(), asyncio.Event()

    async def host() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    hosting = asyncio.create_task(host())
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait([hosting, waiting], return_when=asyncio.FIRST_COMPLETED)
    if hosting.done():
        waiting.cancel()
        hosting.result()  # startup failed: raise its error here
    try:
        yield
    finally:
        stop.set()
        await hosting


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within_s: float = 30.0,
    interval_s: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll `probe` until it returns something truthy; fail after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


async def record_info(
    client: httpx.AsyncClient, headers: dict[str, str], task_id: str
) -> dict[str, Any]:
    """recordInfo's `data` for the task, checked to be a 200."""
    response = await client.get(
        "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=headers
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def wait_for_terminal(
    client: httpx.AsyncClient, headers: dict[str, str], task_id: str, *, within_s: float = 60
) -> dict[str, Any]:
    """Poll recordInfo until the task leaves `waiting`; returns its data."""

    async def probe() -> dict[str, Any] | None:
        data = await record_info(client, headers, task_id)
        return data if data["state"] != "waiting" else None

    return await eventually(probe, within_s=within_s, what=f"task {task_id} to finish")


@asynccontextmanager
async def worker_running(runtime: Runtime) -> AsyncIterator[Worker]:
    """A worker (task loop and callback dispatcher) for an app that runs none itself."""
    worker = Worker(runtime)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await running
