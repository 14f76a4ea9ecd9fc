"""The delivery table as a queue: the same claim-with-lease as tasks (`FOR UPDATE SKIP
LOCKED` on PostgreSQL, the single writer on SQLite)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.callbacks.models import CallbackAttempt, CallbackDelivery, DeliveryStatus
from app.core.ids import now_ms
from app.jobs.viewcache import task_changed_after_commit


async def claim_due_deliveries(
    session: AsyncSession, *, owner: str, limit: int, lease_ms: int
) -> list[CallbackDelivery]:
    """Lease up to `limit` due deliveries to `owner`; a dead owner's come due at lease end."""
    now = now_ms()
    due = (
        select(col(CallbackDelivery.id))
        .where(
            col(CallbackDelivery.status) == DeliveryStatus.PENDING.value,
            col(CallbackDelivery.due_at) <= now,
        )
        .order_by(col(CallbackDelivery.due_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list((await session.execute(due)).scalars())
    if not ids:
        return []
    stmt = (
        update(CallbackDelivery)
        .where(col(CallbackDelivery.id).in_(ids))
        .values(lease_owner=owner, due_at=now + lease_ms, updated_at=now)
        .returning(CallbackDelivery)
        .execution_options(synchronize_session=False)
    )
    return list((await session.execute(stmt)).scalars())


async def fix_body(session: AsyncSession, *, delivery_id: str, body: str) -> str:
    """Set the delivery's body unless it has one; returns the body it has now. The first
    attempt fixes it, so every retry signs and sends the same bytes."""
    await session.execute(
        update(CallbackDelivery)
        .where(col(CallbackDelivery.id) == delivery_id, col(CallbackDelivery.body).is_(None))
        .values(body=body)
    )
    fixed = await session.scalar(
        select(col(CallbackDelivery.body)).where(col(CallbackDelivery.id) == delivery_id)
    )
    return str(fixed)


async def postpone(
    session: AsyncSession, *, delivery_ids: list[str], owner: str, due_at: int
) -> None:
    """Hand claimed deliveries back untried (their host is busy here): no attempt is spent."""
    if not delivery_ids:
        return
    await session.execute(
        update(CallbackDelivery)
        .where(
            col(CallbackDelivery.id).in_(delivery_ids),
            col(CallbackDelivery.lease_owner) == owner,
        )
        .values(lease_owner=None, due_at=due_at, updated_at=now_ms())
        # The session holds the claimed rows; matching each against every update is waste.
        .execution_options(synchronize_session=False)
    )


async def record_attempt(
    session: AsyncSession,
    *,
    delivery: CallbackDelivery,
    owner: str,
    attempt: CallbackAttempt,
    status: DeliveryStatus,
    next_due_at: int | None,
) -> bool:
    """Record one attempt and where the delivery stands after it. False when the lease was
    lost meanwhile (another worker has the delivery now; the attempt is still recorded)."""
    session.add(attempt)
    now = now_ms()
    finished = status is not DeliveryStatus.PENDING
    stmt = (
        update(CallbackDelivery)
        .where(
            col(CallbackDelivery.id) == delivery.id,
            col(CallbackDelivery.lease_owner) == owner,
            col(CallbackDelivery.status) == DeliveryStatus.PENDING.value,
        )
        .values(
            status=status.value,
            attempts=col(CallbackDelivery.attempts) + 1,
            lease_owner=None,
            due_at=next_due_at if next_due_at is not None else now,
            last_error=(attempt.error or (f"HTTP {attempt.status_code}"))[:300]
            if status is not DeliveryStatus.DELIVERED
            else None,
            updated_at=now,
            completed_at=now if finished else None,
        )
        .returning(col(CallbackDelivery.id))
    )
    kept = (await session.execute(stmt)).scalar_one_or_none() is not None
    if kept and finished:  # the task's callbackState is delivered or failed now
        task_changed_after_commit(session, delivery.task_id)
    return kept
