"""The task table as a queue: claim due rows under a lease, renew it, hand it back.

PostgreSQL: `FOR UPDATE SKIP LOCKED` lets any number of workers claim concurrently, each
getting different rows. SQLite: the single writer gives the same exclusivity.
"""

from __future__ import annotations

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.ids import now_ms
from app.jobs.models import ACTIVE_STATUSES, Task, TaskStatus


async def claim_due_tasks(
    session: AsyncSession, *, owner: str, limit: int, lease_ms: int
) -> list[Task]:
    """Lease up to `limit` due tasks to `owner`; they become `generating`."""
    now = now_ms()
    due = (
        select(col(Task.id))
        .where(col(Task.status).in_(ACTIVE_STATUSES), col(Task.due_at) <= now)
        .order_by(col(Task.due_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list((await session.execute(due)).scalars())
    if not ids:
        return []
    stmt = (
        update(Task)
        .where(col(Task.id).in_(ids))
        .values(
            status=TaskStatus.GENERATING.value,
            lease_owner=owner,
            due_at=now + lease_ms,
            attempts=col(Task.attempts) + 1,
            started_at=case((col(Task.started_at).is_(None), now), else_=col(Task.started_at)),
            updated_at=now,
        )
        .returning(Task)
        .execution_options(synchronize_session=False)
    )
    return list((await session.execute(stmt)).scalars())


async def renew_lease(
    session: AsyncSession, *, task_id: str, owner: str, lease_ms: int, progress: int | None = None
) -> bool:
    """Extend our lease (and record progress). False means the task is no longer ours."""
    now = now_ms()
    values: dict[str, int] = {"due_at": now + lease_ms, "updated_at": now}
    if progress is not None:
        values["progress"] = progress
    stmt = (
        update(Task)
        .where(
            col(Task.id) == task_id,
            col(Task.lease_owner) == owner,
            col(Task.status) == TaskStatus.GENERATING.value,
        )
        .values(**values)
        .returning(col(Task.id))
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def release_task(
    session: AsyncSession,
    *,
    task_id: str,
    owner: str,
    due_at: int,
    upstream_id: str | None = None,
    progress: int | None = None,
) -> bool:
    """Give the lease back; the task comes due again at `due_at` (a poll or a retry)."""
    values: dict[str, object] = {"lease_owner": None, "due_at": due_at, "updated_at": now_ms()}
    if upstream_id is not None:
        values["upstream_id"] = upstream_id
    if progress is not None:
        values["progress"] = progress
    stmt = (
        update(Task)
        .where(col(Task.id) == task_id, col(Task.lease_owner) == owner)
        .values(**values)
        .returning(col(Task.id))
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None
