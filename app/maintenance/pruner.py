"""The retention job: pruning runs in batches as a periodic job of the whole deployment.

Every worker process (embedded or `gengate worker`) runs a Pruner beside its loops; the
`retention` job row makes one of them at a time do the work, once per
`GENGATE_PRUNE_INTERVAL_SECONDS`. Each batch is its own short transaction, so a large
backlog never holds long locks, and a stopping worker gives the job back between batches,
due at once, for another process to go on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

from app.core.ids import now_ms
from app.core.loops import log_failure, wait_any
from app.maintenance.jobs import claim_job, job_due_at, release_job, renew_job
from app.maintenance.retention import PruneCounts, cutoff_for, iso, prune_batch
from app.runtime import Runtime

log = logging.getLogger("gengate.retention")

RETENTION_JOB = "retention"
# Renewed after every batch; a batch is far shorter. A process that dies holding the job
# delays it by at most this long.
LEASE_MS = 10 * 60 * 1000
# How soon a process checks again after a failed run (the database away, say).
RETRY_S = 60.0
# A job due now that could not be claimed is being claimed by another process right now.
MIN_WAIT_S = 1.0


Ended = Literal["done", "stopped", "store_failed", "lease_lost"]


@dataclass(frozen=True)
class PruneRun:
    cutoff: int
    counts: PruneCounts
    # Why the run ended: nothing left, a shutdown, the media store failing, or its lease
    # running out (another process has the job now).
    ended: Ended


async def run_retention(
    runtime: Runtime,
    *,
    owner: str,
    days: int,
    now: int,
    only_if_due: bool = True,
    stop: asyncio.Event | None = None,
) -> PruneRun | None:
    """Claim the retention job and prune everything finished `days` before `now`, batch by
    batch; None when another process holds the job (or, `only_if_due`, it is not due).

    A finished run makes the job due again one interval after `now`. One that stopped for
    a shutdown makes it due at once, so another process carries on; one the media store
    failed, after a minute.
    """
    async with runtime.sessions() as session:
        claimed = await claim_job(
            session,
            name=RETENTION_JOB,
            owner=owner,
            now=now,
            lease_ms=LEASE_MS,
            only_if_due=only_if_due,
        )
        await session.commit()
    if not claimed:
        return None
    run = await _prune(runtime, owner=owner, cutoff=cutoff_for(now, days), stop=stop)
    if run.ended == "lease_lost":
        return run  # the job is another process's now
    due_at = {
        "done": now + int(runtime.settings.prune_interval_seconds * 1000),
        "stopped": now_ms(),
        "store_failed": now_ms() + int(RETRY_S * 1000),
    }[run.ended]
    async with runtime.sessions() as session:
        await release_job(session, name=RETENTION_JOB, owner=owner, due_at=due_at)
        await session.commit()
    return run


async def _prune(
    runtime: Runtime, *, owner: str, cutoff: int, stop: asyncio.Event | None
) -> PruneRun:
    """Batches until none is left, renewing the job's lease after each."""
    counts = PruneCounts()
    while stop is None or not stop.is_set():
        batch = await prune_batch(runtime, cutoff=cutoff, limit=runtime.settings.prune_batch_size)
        counts.add(batch.counts)
        if batch.store_failed:
            return PruneRun(cutoff, counts, "store_failed")
        if not batch.more:
            return PruneRun(cutoff, counts, "done")
        if not await _renew(runtime, owner):
            return PruneRun(cutoff, counts, "lease_lost")
    return PruneRun(cutoff, counts, "stopped")


async def _renew(runtime: Runtime, owner: str) -> bool:
    async with runtime.sessions() as session:
        kept = await renew_job(
            session, name=RETENTION_JOB, owner=owner, now=now_ms(), lease_ms=LEASE_MS
        )
        await session.commit()
    return kept


class Pruner:
    """A worker's retention loop; it does nothing while retention is off (the default)."""

    def __init__(self, runtime: Runtime, *, owner: str) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self.owner = owner

    async def run(self, stop: asyncio.Event) -> None:
        days = self._settings.retention_days
        if days is None:
            return
        while not stop.is_set():
            await wait_any([stop], within_s=await self._run_if_due(days, stop))

    async def _run_if_due(self, days: int, stop: asyncio.Event) -> float:
        """Run the job if it is due here; seconds until it may be due next."""
        try:
            run = await run_retention(
                self._runtime, owner=self.owner, days=days, now=now_ms(), stop=stop
            )
            if run is not None and run.counts:
                log.info("retention: deleted %s finished before %s", run.counts, iso(run.cutoff))
            return await self._until_due()
        except Exception as exc:
            log_failure(log, "retention run failed", exc)
            return RETRY_S

    async def _until_due(self) -> float:
        """Seconds until the job's row says it is due (its next run, or the lease expiry of
        the process running it), never longer than one interval."""
        async with self._runtime.sessions() as session:
            due_at = await job_due_at(session, name=RETENTION_JOB)
        interval = self._settings.prune_interval_seconds
        if due_at is None:
            return interval
        return min(max((due_at - now_ms()) / 1000, MIN_WAIT_S), interval)
