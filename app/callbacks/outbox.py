"""The outbox: a finished task's delivery row, written in the transaction that finished it,
and what callers may read or ask of it."""

from __future__ import annotations

from sqlalchemy import and_, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.callbacks.models import CallbackAttempt, CallbackDelivery, DeliveryStatus
from app.callbacks.schemas import CallbackAttemptRead, CallbackDeliveryRead
from app.core.errors import Conflict
from app.core.ids import new_id, now_ms
from app.db.hooks import after_commit
from app.jobs.models import ACTIVE_STATUSES, Task
from app.jobs.notify import Notifier
from app.jobs.viewcache import task_changed_after_commit

_INSERT_DELIVERY = insert(CallbackDelivery.metadata.tables["callback_delivery"])


async def enqueue_callback(
    session: AsyncSession, *, notifier: Notifier, task_id: str, account_id: str, url: str
) -> str:
    """Queue the callback of a task that has just finished, in the caller's transaction.

    Returns the delivery id, which is also its `webhook-id`.
    """
    now = now_ms()
    delivery_id = new_id("msg")
    await session.execute(
        _INSERT_DELIVERY,
        {
            "id": delivery_id,
            "task_id": task_id,
            "account_id": account_id,
            "url": url,
            "status": DeliveryStatus.PENDING.value,
            "body": None,
            "attempts": 0,
            "due_at": now,
            "lease_owner": None,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
            "completed_at": None,
        },
    )
    after_commit(session, notifier.wake_deliveries)
    task_changed_after_commit(session, task_id)  # its callbackState is pending again
    return delivery_id


async def list_deliveries(session: AsyncSession, *, task: Task) -> list[CallbackDeliveryRead]:
    """A task's deliveries, newest first, each with its attempts in order."""
    deliveries = (
        await session.scalars(
            select(CallbackDelivery)
            .where(col(CallbackDelivery.task_id) == task.id)
            .order_by(col(CallbackDelivery.created_at).desc(), col(CallbackDelivery.id).desc())
        )
    ).all()
    return await _with_attempts(session, list(deliveries))


async def list_account_deliveries(
    session: AsyncSession, *, account_id: str, limit: int, before: tuple[int, str] | None = None
) -> list[CallbackDeliveryRead]:
    """An account's deliveries of every task, newest first, each with its attempts in order;
    `before` (created_at, id) of the last row seen is the cursor of the next page."""
    created, ident = col(CallbackDelivery.created_at), col(CallbackDelivery.id)
    stmt = select(CallbackDelivery).where(col(CallbackDelivery.account_id) == account_id)
    if before is not None:
        at, last_id = before
        stmt = stmt.where(or_(created < at, and_(created == at, ident < last_id)))
    stmt = stmt.order_by(created.desc(), ident.desc()).limit(limit)
    return await _with_attempts(session, list((await session.scalars(stmt)).all()))


async def _with_attempts(
    session: AsyncSession, deliveries: list[CallbackDelivery]
) -> list[CallbackDeliveryRead]:
    attempts: dict[str, list[CallbackAttemptRead]] = {d.id: [] for d in deliveries}
    if deliveries:
        rows = await session.scalars(
            select(CallbackAttempt)
            .where(col(CallbackAttempt.delivery_id).in_(list(attempts)))
            .order_by(col(CallbackAttempt.delivery_id), col(CallbackAttempt.number))
        )
        for attempt in rows:
            attempts[attempt.delivery_id].append(CallbackAttemptRead.of(attempt))
    return [CallbackDeliveryRead.of(d, attempts[d.id]) for d in deliveries]


async def redeliver(session: AsyncSession, *, notifier: Notifier, task: Task) -> str:
    """Queue the task's current callback again, as a new delivery with a new `webhook-id`.

    Raises Conflict when the task has no callback URL, is still waiting, or has a delivery
    still pending.
    """
    if not task.callback_url:
        raise Conflict("task has no callBackUrl", field="taskId")
    if task.status in ACTIVE_STATUSES:
        raise Conflict(
            "task is still waiting; its callback is sent when it finishes", field="taskId"
        )
    # Concurrent redeliveries of one task take turns here, so only the first finds no
    # pending delivery (on SQLite the single writer already serializes them).
    await session.execute(select(col(Task.id)).where(col(Task.id) == task.id).with_for_update())
    pending = await session.scalar(
        select(col(CallbackDelivery.id))
        .where(
            col(CallbackDelivery.task_id) == task.id,
            col(CallbackDelivery.status) == DeliveryStatus.PENDING.value,
        )
        .limit(1)
    )
    if pending is not None:
        raise Conflict(
            "a delivery of this task is still pending", field="taskId", deliveryId=pending
        )
    return await enqueue_callback(
        session,
        notifier=notifier,
        task_id=task.id,
        account_id=task.account_id,
        url=task.callback_url,
    )
