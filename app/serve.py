"""`gengate serve`: in development, migrate and make a dev key first; then run uvicorn.

With `--workers N` above 1, uvicorn runs N API processes on one socket. Each builds the app
from the environment (`app.main:create_app`) and, unless GENGATE_WORKERS_IN_PROCESS is
false, runs its own embedded task workers: they share the work through the database's
claims and leases, as `gengate worker` processes do. What must happen once (migrations, the
dev key, the development signing secret) happens here, in the parent, before they start.
"""

from __future__ import annotations

import asyncio
import math

import uvicorn
from rich.console import Console

from app.cli_errors import CommandFailed
from app.core import metrics
from app.core.config import Settings
from app.core.logging import log_config
from app.db.migrate import upgrade_database
from app.devkey import dev_key_path, ensure_dev_key
from app.main import create_app
from app.runtime import Runtime

APP_FACTORY = "app.main:create_app"
# How long uvicorn's parent waits for an API process to answer its health check before it
# kills and replaces it. Its default (5 s) is shorter than a process takes to import the app
# on a busy host, so processes still starting were killed and started again, over and over.
WORKER_HEALTHCHECK_S = 30


async def _prepare_development(settings: Settings) -> str | None:
    runtime = await Runtime.start(settings)
    try:
        async with runtime.sessions() as session:
            key = await ensure_dev_key(session, settings)
            await session.commit()
            return key
    finally:
        await runtime.close()


def prepare_development(settings: Settings) -> None:
    """Development only: migrate the database and make sure the development key exists,
    printing it when it is new. The key goes to stdout, once; the server's log stream
    (stderr) never carries a key."""
    console = Console()
    upgrade_database(settings.resolved_database_url)
    key = asyncio.run(_prepare_development(settings))
    path = dev_key_path(settings)
    if key:
        console.print(f"[bold green]development API key[/bold green] (saved to {path}):")
        console.print(key, highlight=False, soft_wrap=True)
    else:
        console.print(f"development API key: see {path}")


def check_workers(settings: Settings, workers: int) -> None:
    """Refuse more than one API process where the processes could not share their state.

    SQLite is one file with one writer: several processes writing it (each with its own
    embedded workers) would contend for its lock, which the embedded mode never has to.
    Without Redis, rate-limit counters, wake-ups and key revocations live in each process,
    so N processes would each grant a key its full limit.
    """
    if workers < 1:
        raise CommandFailed("--workers must be at least 1", field="workers", exit_code=2)
    if workers == 1:
        return
    needs, reasons = [], []
    if settings.is_sqlite:
        needs.append("PostgreSQL (GENGATE_DATABASE_URL)")
        reasons.append("SQLite has a single writer")
    if not settings.redis_url:
        needs.append("Redis (GENGATE_REDIS_URL)")
        reasons.append("without Redis, rate limits and wake-ups are counted per process")
    if needs:
        raise CommandFailed(
            f"--workers {workers} needs {' and '.join(needs)}: {'; '.join(reasons)}. "
            "Use --workers 1 otherwise",
            field="workers",
        )


def serve(settings: Settings, *, host: str | None, port: int | None, workers: int = 1) -> None:
    check_workers(settings, workers)
    if settings.env == "development":
        prepare_development(settings)
    if workers > 1:
        try:
            # Outside production the secret may be generated under var_dir: once, here, so
            # every process signs media URLs with the same one.
            settings.resolve_signing_secret()
        except RuntimeError as exc:
            raise CommandFailed(str(exc)) from None
        metrics.share_between_processes()  # one /metrics for every process (app.core.metrics)
    uvicorn.run(
        # Processes uvicorn spawns build the app from an import string and the environment
        # this one read; one process serves the app built from these very settings.
        APP_FACTORY if workers > 1 else create_app(settings),
        factory=workers > 1,
        workers=workers,
        host=host or settings.host,
        port=port or settings.port,
        log_config=log_config(settings.log_level, settings.log_format),
        proxy_headers=False,
        # On SIGTERM: stop accepting, give open requests this long, then the app's shutdown
        # (its embedded workers give back what they could not finish). With --workers N the
        # parent passes SIGTERM to each process and waits for them.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
    )
