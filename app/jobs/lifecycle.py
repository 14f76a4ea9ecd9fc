"""Terminal transitions of a task, each a conditional UPDATE plus its credit movement.

The condition (`status` still active, and for a worker's failure its own lease) makes
every transition happen once: a canceled task's late result, or a second worker's
duplicate, updates nothing and moves no credits.
"""

from __future__ import annotations

from sqlalchemy import Row, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.callbacks.outbox import enqueue_callback
from app.channels.registry import cancel_upstream_after_commit
from app.core import metrics
from app.core.ids import now_ms
from app.credits.service import refund_hold, settle_hold
from app.db.hooks import after_commit
from app.jobs.failures import fail_code
from app.jobs.models import ACTIVE_STATUSES, Task, TaskStatus
from app.jobs.notify import Notifier


async def fail_task(
    session: AsyncSession,
    *,
    notifier: Notifier,
    task_id: str,
    code: str,
    message: str,
    owner: str | None = None,
    channel: str | None = None,
) -> bool:
    """Fail an active task and refund it unless the caller's input caused it.

    With `owner`, only while that worker still holds the lease. `channel`: the one whose
    answer failed it, for the usage report. Returns False when the task was no longer
    active (or no longer ours).
    """
    now = now_ms()
    stmt = (
        update(Task)
        .where(col(Task.id) == task_id, col(Task.status).in_(ACTIVE_STATUSES))
        .values(
            status=TaskStatus.FAIL.value,
            fail_code=code,
            fail_msg=message[:1000],
            completed_at=now,
            updated_at=now,
            lease_owner=None,
            **_channel(channel),
        )
        .returning(col(Task.account_id), col(Task.callback_url), col(Task.model))
    )
    if owner is not None:
        stmt = stmt.where(col(Task.lease_owner) == owner)
    finished = (await session.execute(stmt)).first()
    if finished is None:
        return False
    if fail_code(code).refunded:
        await refund_hold(session, task_id=task_id, note=code)
    else:
        await settle_hold(session, task_id=task_id)
    await _finished(session, notifier=notifier, task_id=task_id, finished=finished, code=code)
    return True


async def _finished(
    session: AsyncSession,
    *,
    notifier: Notifier,
    task_id: str,
    finished: Row[tuple[str, str | None, str]],
    code: str | None = None,
) -> None:
    """What every terminal transition does besides its credits: queue the task's callback
    in the same transaction (the outbox), and wake its waiters and count it once that
    commits. `code`: the fail code of a failure; None for a success."""
    account_id, callback_url, model = finished
    if callback_url:
        await enqueue_callback(
            session, notifier=notifier, task_id=task_id, account_id=account_id, url=callback_url
        )
    after_commit(session, lambda: notifier.task_finished(task_id))
    after_commit(session, lambda: metrics.task_finished(model, code))


async def succeed_task(
    session: AsyncSession,
    *,
    notifier: Notifier,
    task_id: str,
    upstream_cost: str | None = None,
    channel: str | None = None,
) -> bool:
    """Mark a task done and settle its hold, if it is still active. False: it was not.

    Whichever worker finished first wins, even one whose lease ran out meanwhile (a
    database outage stopped its renewals): its result is already made and stored, and
    dropping it would make (and pay for) the same result again. A worker that took the
    task over sees its lease gone at its next renewal and drops its work.
    """
    now = now_ms()
    stmt = (
        update(Task)
        .where(col(Task.id) == task_id, col(Task.status).in_(ACTIVE_STATUSES))
        .values(
            status=TaskStatus.SUCCESS.value,
            progress=100,
            queue_position=None,
            upstream_cost=upstream_cost,
            **_channel(channel),
            completed_at=now,
            updated_at=now,
            lease_owner=None,
        )
        .returning(col(Task.account_id), col(Task.callback_url), col(Task.model))
    )
    finished = (await session.execute(stmt)).first()
    if finished is None:
        return False
    await settle_hold(session, task_id=task_id)
    await _finished(session, notifier=notifier, task_id=task_id, finished=finished)
    return True


def _channel(channel: str | None) -> dict[str, str]:
    """The task's channel column when the transition names one (else left as it is)."""
    return {"channel": channel} if channel is not None else {}


async def expire_overdue(
    session: AsyncSession, *, notifier: Notifier, now: int, limit: int = 100
) -> int:
    """Fail with `expired` (and refund) every active task past its deadline."""
    from sqlalchemy import select

    overdue = (
        await session.execute(
            select(col(Task.id), col(Task.channel), col(Task.model), col(Task.upstream_id))
            .where(col(Task.status).in_(ACTIVE_STATUSES), col(Task.deadline_at) < now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    expired = 0
    for task_id, channel, model, upstream_id in overdue:
        if await fail_task(
            session,
            notifier=notifier,
            task_id=task_id,
            code="expired",
            message="the task did not finish before its deadline",
        ):
            expired += 1
            cancel_upstream_after_commit(
                session, task_id=task_id, channel=channel, model=model, upstream_id=upstream_id
            )
    return expired
