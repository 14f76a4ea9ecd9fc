"""The ASGI application: REST routes, the MCP endpoint and, embedded, the workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp

from app import __version__
from app.api.errors import install_error_handlers
from app.api.metrics import METRICS_PATH, HttpMetrics, metrics_endpoint
from app.api.openapi import install_openapi
from app.api.routes import account, files, health, jobs, keys, media, models, upstream, v1
from app.catalog.catalog import load_catalog
from app.console import auth as console_auth
from app.console import connect as console_connect
from app.console import consent as console_consent
from app.console import gallery as console_gallery
from app.console import keys as console_keys
from app.console import ledger as console_ledger
from app.console import overview as console_overview
from app.console import playground as console_playground
from app.console import tasks as console_tasks
from app.console import webhooks as console_webhooks
from app.console.setup import install_console
from app.core import metrics
from app.core.config import Settings
from app.core.correlation import CorrelationMiddleware
from app.imagine.styles import load_imagine
from app.jobs.worker import Worker
from app.oauth.routes import oauth_routes
from app.runtime import Runtime
from mcp_server.gateway import McpGateway
from mcp_server.server import MCP_PATH, build_mcp


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


class _Gateway(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        """The correlation id goes around every other layer, Starlette's error middleware
        included: a 500 and the line that logs its exception carry it too."""
        return CorrelationMiddleware(super().build_middleware_stack())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    catalog = load_catalog(settings.catalog_path)
    styles = load_imagine(settings, catalog)
    mcp = build_mcp(settings, catalog, styles)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings, catalog=catalog, styles=styles, hot_paths=True)
        app.state.runtime = runtime
        try:
            async with mcp.running(), embedded_worker(runtime):
                yield
        finally:
            await runtime.close()
            metrics.process_stopped()

    app = _Gateway(
        title="gengate",
        version=__version__,
        summary="Gateway for asynchronous AI image and video generation",
        lifespan=lifespan,
        telemetry={
            "tracing": settings.opentelemetry,
            "metrics": settings.opentelemetry,
            "logs": settings.opentelemetry,
        },
    )
    install_error_handlers(app)
    install_console(app)
    install_openapi(app, catalog, styles, settings)
    app.add_middleware(HttpMetrics)
    # Routes are matched in order, one pattern at a time: the hot ones first. MCP's is an
    # exact route, not a mount: a mount at /api/mcp would redirect POST /api/mcp.
    app.router.routes.insert(
        0, Route(MCP_PATH, endpoint=McpGateway(mcp), methods=["GET", "POST", "DELETE"])
    )
    for router in (
        jobs.router,
        health.router,
        account.router,
        keys.router,
        models.router,
        files.router,
        media.router,
        upstream.router,
        v1.router,
        console_auth.router,
        console_overview.router,
        console_keys.router,
        console_webhooks.router,
        console_ledger.router,
        console_connect.router,
        console_consent.router,
        console_playground.router,
        console_gallery.router,
        console_tasks.router,
    ):
        app.include_router(router)
    app.router.routes.extend(oauth_routes())
    app.add_route(METRICS_PATH, metrics_endpoint, include_in_schema=False)
    return app
