"""GET /metrics (Prometheus text format), the HTTP request metrics, and the metrics port of
a `gengate worker`.

The figures include business ones (tasks, credits): without GENGATE_METRICS_TOKEN only a
client on this machine that did not come through a proxy may read them; with it, whoever
presents it as a bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from time import perf_counter

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.metrics import Counter, Histogram
from sqlalchemy import func, select
from sqlmodel import col
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics
from app.jobs.models import ACTIVE_STATUSES, Task, TaskStatus
from app.runtime import Runtime

log = logging.getLogger("gengate.metrics")

METRICS_PATH = "/metrics"
# A scrape must answer even when the database does not: the queue depth is then left out.
QUEUE_DEPTH_TIMEOUT_S = 1.0
UNMATCHED = "unmatched"  # the route label of a request no route took (404s of any path)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A request that carries these came through a proxy: its loopback peer says nothing about
# where the client is.
_FORWARDED = (b"forwarded", b"x-forwarded-for", b"x-real-ip")


class HttpMetrics:
    """Counts and times every HTTP request by route template, method and status.

    Pure ASGI: BaseHTTPMiddleware would run each request through memory streams and a task
    of its own, a cost the hot routes would feel. The route is the one Starlette's router
    matched (scope["route"]), so the label is its path template, never the raw path.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Labelled children per (route, method, status), so a request skips labels()' checks.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self._observe(scope, status, perf_counter() - started)

    def _observe(self, scope: Scope, status: int, elapsed_s: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", UNMATCHED)
        method = scope["method"] if scope["method"] in _METHODS else "other"
        key = (template, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                metrics.HTTP_REQUESTS.labels(template, method, str(status)),
                metrics.HTTP_DURATION.labels(template, method),
            )
        series[0].inc()
        series[1].observe(elapsed_s)


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics, of the API (see app.main) and of a worker's metrics port alike."""
    runtime: Runtime = request.app.state.runtime
    refusal = _refusal(request, runtime.settings.metrics_token)
    if refusal is not None:
        return refusal
    depth = await queue_depth(runtime)
    # Under `serve --workers N` this reads every process's file: off the event loop.
    body = await asyncio.to_thread(metrics.exposition, depth)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _refusal(request: Request, token: str | None) -> Response | None:
    """None when the caller may read the metrics; else the answer it gets."""
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode()):
            return None
        return PlainTextResponse(
            "metrics need the bearer token GENGATE_METRICS_TOKEN",
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if _is_loopback(request.client.host if request.client else None) and not any(
        name in _FORWARDED for name, _ in request.scope["headers"]
    ):
        return None
    return PlainTextResponse(
        "metrics are served to this machine only; set GENGATE_METRICS_TOKEN to scrape them "
        "from elsewhere",
        status_code=403,
    )


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_HELD = col(Task.upstream_id).is_not(None)
_DEPTH = (
    select(col(Task.status), _HELD, func.count())
    .where(col(Task.status).in_(ACTIVE_STATUSES))
    .group_by(col(Task.status), _HELD)
)


async def queue_depth(runtime: Runtime) -> dict[str, int] | None:
    """Active tasks by stage, in one query over the active statuses (the status index);
    None when the database failed or did not answer within QUEUE_DEPTH_TIMEOUT_S."""
    try:
        async with asyncio.timeout(QUEUE_DEPTH_TIMEOUT_S), runtime.engine.connect() as conn:
            rows = (await conn.execute(_DEPTH)).all()
    except Exception as exc:
        log.warning("queue depth left out of the scrape: %s", type(exc).__name__)
        return None
    depth = dict.fromkeys(metrics.QUEUE_STAGES, 0)
    for status, held, count in rows:
        if held:
            depth["held_upstream"] += count
        elif status == TaskStatus.GENERATING.value:
            depth["generating"] += count
        else:
            depth["queued"] += count
    return depth


@contextlib.asynccontextmanager
async def serving_worker_metrics(runtime: Runtime) -> AsyncIterator[None]:
    """`gengate worker`: serve GET /metrics on GENGATE_WORKER_METRICS_PORT (at GENGATE_HOST)
    while the worker runs; nothing when the port is not set. The socket is bound before the
    worker starts, so a port already taken stops it with a clear error (OSError)."""
    port = runtime.settings.worker_metrics_port
    if port is None:
        yield
        return
    import uvicorn  # here: a worker without a metrics port never loads it

    host = runtime.settings.host
    try:
        listening = socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET
        )
    except OSError as exc:
        raise OSError(exc.errno, f"GENGATE_WORKER_METRICS_PORT {port}: {exc.strerror}") from None

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """SIGTERM and SIGINT are the worker's (app.jobs.runner), which stops us."""
            yield

    app = Starlette(routes=[Route(METRICS_PATH, metrics_endpoint)])
    app.state.runtime = runtime
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listening]), name="worker metrics")
    try:
        yield
    finally:
        server.should_exit = True
        await serving
        listening.close()
