"""Periodic jobs, claimed like the task queue's due work: one `maintenance_job` row each.

PostgreSQL: `FOR UPDATE SKIP LOCKED` lets every process try at once and exactly one get the
job; SQLite: the single writer gives the same exclusivity. The row is made on first use, so
a new job needs no migration and an emptied table heals itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.maintenance.models import MaintenanceJob

# Text: PostgreSQL and SQLite read the same ON CONFLICT clause.
_ENSURE = text(
    "INSERT INTO maintenance_job (name, due_at) VALUES (:name, :now) ON CONFLICT (name) DO NOTHING"
)


async def claim_job(
    session: AsyncSession, *, name: str, owner: str, now: int, lease_ms: int, only_if_due: bool
) -> bool:
    """Lease the job to `owner` until `now + lease_ms`; False when another process has it.

    `only_if_due`: the periodic loop's claim, which waits for the job's time. Without it (an
    operator's `gengate prune`), the job is taken now unless a live process holds it.
    """
    await session.execute(_ENSURE, {"name": name, "now": now})
    ready = col(MaintenanceJob.due_at) <= now
    if not only_if_due:
        ready = ready | col(MaintenanceJob.lease_owner).is_(None)
    free = (
        select(col(MaintenanceJob.name))
        .where(col(MaintenanceJob.name) == name, ready)
        .with_for_update(skip_locked=True)
    )
    if await session.scalar(free) is None:
        return False
    await session.execute(
        update(MaintenanceJob)
        .where(col(MaintenanceJob.name) == name)
        .values(lease_owner=owner, due_at=now + lease_ms)
    )
    return True


async def renew_job(
    session: AsyncSession, *, name: str, owner: str, now: int, lease_ms: int
) -> bool:
    """Extend our lease; False means the job is no longer ours (the lease ran out)."""
    return await _ours(session, name=name, owner=owner, values={"due_at": now + lease_ms})


async def release_job(session: AsyncSession, *, name: str, owner: str, due_at: int) -> bool:
    """Give the job back, due again at `due_at`; False when it was no longer ours."""
    values = {"due_at": due_at, "lease_owner": None}
    return await _ours(session, name=name, owner=owner, values=values)


async def job_due_at(session: AsyncSession, *, name: str) -> int | None:
    """When the job next needs a process (None: it never ran)."""
    stmt = select(col(MaintenanceJob.due_at)).where(col(MaintenanceJob.name) == name)
    return await session.scalar(stmt)


async def _ours(
    session: AsyncSession, *, name: str, owner: str, values: Mapping[str, object]
) -> bool:
    stmt = (
        update(MaintenanceJob)
        .where(col(MaintenanceJob.name) == name, col(MaintenanceJob.lease_owner) == owner)
        .values(**values)
        .returning(col(MaintenanceJob.name))
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None
