"""The ASGI application: REST routes (and, mounted last, the MCP server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api.errors import install_error_handlers
from app.api.routes import account, health, keys
from app.core.config import Settings
from app.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings)
        app.state.runtime = runtime
        try:
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
    for router in (health.router, account.router, keys.router):
        app.include_router(router)
    return app
