"""`gengate worker`: a process that only runs tasks, stopped cleanly by SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging.config
import signal
from collections.abc import Coroutine
from typing import Any

from app.api.metrics import serving_worker_metrics
from app.core.config import Settings
from app.core.logging import log_config
from app.jobs.worker import Worker
from app.runtime import Runtime

log = logging.getLogger("gengate.worker")


async def _main(settings: Settings, concurrency: int | None) -> None:
    runtime = await Runtime.start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(runtime, concurrency=concurrency)
    log.info("worker %s started", worker.owner)
    try:
        async with serving_worker_metrics(runtime):
            await worker.run(stop)
    finally:
        await runtime.close()
        log.info("worker %s stopped", worker.owner)


def run_worker(settings: Settings, *, concurrency: int | None = None) -> None:
    logging.config.dictConfig(log_config(settings.log_level, settings.log_format))
    run_loop(_main(settings, concurrency))


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed (it comes with uvicorn[standard] on
    Linux and macOS; a worker spends much of its time in the loop), else asyncio's own."""
    try:
        import uvloop
    except ImportError:  # Windows
        asyncio.run(main)
        return
    uvloop.run(main)
