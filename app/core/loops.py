"""What the background loops (tasks, callbacks) share: waiting on signals, logging failures."""

from __future__ import annotations

import asyncio
import logging

from app.core.outages import is_outage


async def wait_any(events: list[asyncio.Event], *, within_s: float) -> None:
    """Return when one of `events` is set, or after `within_s` seconds."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def log_failure(log: logging.Logger, what: str, exc: Exception) -> None:
    # An outage repeats this every scan: one line each, not a stack trace each.
    if is_outage(exc):
        log.warning("%s: database unavailable (%s)", what, type(exc).__name__)
    else:
        log.exception(what, exc_info=exc)
