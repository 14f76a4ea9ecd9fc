"""The task table as a queue: claim due rows under a lease, renew it, hand it back.

PostgreSQL: `FOR UPDATE SKIP LOCKED` lets any number of workers claim concurrently, each
getting different rows. SQLite: the single writer gives the same exclusivity.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.ids import now_ms
from app.jobs.models import ACTIVE_STATUSES, Task, TaskStatus
from app.jobs.viewcache import task_changed_after_commit


async def claim_due_tasks(
    session: AsyncSession, *, owner: str, limit: int, lease_ms: int, polls: bool = False
) -> list[Task]:
    """Lease up to `limit` due tasks to `owner`; they become `generating`.

    `polls`: claim tasks an upstream holds (due for a poll) instead of tasks to submit. The
    two are separate pools of work: a poll is a short request, a submit may be a render.
    A poll is not an attempt: it counts in `polls`, and only the deadline bounds them.
    A task past its deadline is not claimed: the expiry sweep fails and refunds it.
    """
    now = now_ms()
    held = col(Task.upstream_id).is_not(None) if polls else col(Task.upstream_id).is_(None)
    due = (
        select(col(Task.id))
        .where(
            col(Task.status).in_(ACTIVE_STATUSES),
            col(Task.due_at) <= now,
            col(Task.deadline_at) > now,
            held,
        )
        .order_by(col(Task.due_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list((await session.execute(due)).scalars())
    if not ids:
        return []
    counted = {"polls": col(Task.polls) + 1} if polls else {"attempts": col(Task.attempts) + 1}
    stmt = (
        update(Task)
        .where(col(Task.id).in_(ids))
        .values(
            status=TaskStatus.GENERATING.value,
            lease_owner=owner,
            due_at=now + lease_ms,
            started_at=case((col(Task.started_at).is_(None), now), else_=col(Task.started_at)),
            updated_at=now,
            **counted,
        )
        .returning(Task)
        .execution_options(synchronize_session=False)
    )
    claimed = list((await session.execute(stmt)).scalars())
    task_changed_after_commit(session, *(task.id for task in claimed))
    return claimed


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
    return await _changed(session, stmt)


async def release_task(
    session: AsyncSession,
    *,
    task_id: str,
    owner: str,
    due_at: int,
    upstream_id: str | None = None,
    progress: int | None = None,
    queue_position: int | None = None,
    forget_channel: bool = False,
) -> bool:
    """Give the lease back; the task comes due again at `due_at` (a poll or a retry).

    `forget_channel`: the channel refused the task (it holds nothing), so the next attempt
    may go anywhere.
    """
    values: dict[str, object] = {"lease_owner": None, "due_at": due_at, "updated_at": now_ms()}
    if upstream_id is not None:
        values["upstream_id"] = upstream_id
        values["queue_position"] = queue_position
    if progress is not None:
        values["progress"] = progress
    if forget_channel:
        values["channel"] = None
    stmt = (
        update(Task)
        .where(col(Task.id) == task_id, col(Task.lease_owner) == owner)
        .values(**values)
        .returning(col(Task.id))
    )
    return await _changed(session, stmt)


async def give_back_task(session: AsyncSession, *, task_id: str, owner: str, sent: bool) -> bool:
    """Hand a task this worker is stopping before it finished back to the queue, due now.

    Only while `owner` still holds it: a task settled elsewhere, or taken over, is left as
    it is. The claim's count is undone (a shutdown is not a failed attempt, nor a poll made),
    and the hold is not touched: the task is still paid for, once.

    What the next worker does follows from the row, as after a crash: a task an upstream
    holds (`upstream_id`) is polled, never sent again; one whose channel may have it
    (`channel` set, no upstream id yet) takes the crash path for an unconfirmed submit; one
    nothing holds goes back to `queued`. `sent`: whether the submit call was made. False
    means the channel assigned for it never saw the task, so it is forgotten.
    """
    held = col(Task.upstream_id).is_not(None)
    channel = col(Task.channel) if sent else case((held, col(Task.channel)), else_=None)
    may_hold = held | channel.is_not(None)
    now = now_ms()
    stmt = (
        update(Task)
        .where(
            col(Task.id) == task_id,
            col(Task.lease_owner) == owner,
            col(Task.status) == TaskStatus.GENERATING.value,
        )
        .values(
            lease_owner=None,
            due_at=now,
            updated_at=now,
            channel=channel,
            status=case((may_hold, col(Task.status)), else_=TaskStatus.QUEUED.value),
            progress=case((may_hold, col(Task.progress)), else_=0),
            attempts=case((held, col(Task.attempts)), else_=col(Task.attempts) - 1),
            polls=case((held, col(Task.polls) - 1), else_=col(Task.polls)),
        )
        .returning(col(Task.id))
    )
    return await _changed(session, stmt)


async def assign_channel(session: AsyncSession, *, task_id: str, owner: str, channel: str) -> bool:
    """Record where the task is about to be sent, before sending it: after a crash the next
    worker then knows which upstream may already hold it."""
    stmt = (
        update(Task)
        .where(col(Task.id) == task_id, col(Task.lease_owner) == owner)
        .values(channel=channel, updated_at=now_ms())
        .returning(col(Task.id))
    )
    return await _changed(session, stmt)


async def _changed(session: AsyncSession, stmt: Any) -> bool:
    """Run an UPDATE of one task that returns its id; whether it matched (and, if it did,
    announce the change once it commits)."""
    task_id = (await session.execute(stmt)).scalar_one_or_none()
    if task_id is None:
        return False
    task_changed_after_commit(session, task_id)
    return True
