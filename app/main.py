"""The ASGI application: REST routes, embedded workers (and, mounted last, the MCP server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api.errors import install_error_handlers
from app.api.routes import account, health, jobs, keys, media, models
from app.core.config import Settings
from app.jobs.worker import Worker
from app.runtime import Runtime


@asynccontextmanager
async def embedded_worker(runtime: Runtime) -> AsyncIterator[None]:
    """In the embedded mode the workers live in the API process."""
    if not runtime.settings.workers_in_process:
        yield
        return
    stop = asyncio.Event()
    running = asyncio.create_task(Worker(runtime).run(stop), name="embedded worker")
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await running


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings)
        app.state.runtime = runtime
        try:
            async with embedded_worker(runtime):
                yield
        finally:
            await runtime.close()

    app = FastAPI(
        title="gengate",
        version=__version__,
        summary="Gateway for asynchronous AI image and video generation",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for router in (
        health.router,
        account.router,
        keys.router,
        models.router,
        jobs.router,
        media.router,
    ):
        app.include_router(router)
    return app
