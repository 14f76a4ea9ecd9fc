"""Data for the retention tests: finished tasks made by the real worker, then aged by
rewriting their timestamps (no waiting), and callback deliveries written as the outbox does."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy import func, select, update
from sqlmodel import col

from app.accounts.models import Account
from app.callbacks.models import CallbackAttempt, CallbackDelivery, DeliveryStatus
from app.core.ids import new_id, now_ms
from app.credits.models import LedgerEntry
from app.jobs.models import Task, TaskGroup
from app.maintenance.retention import DAY_MS
from app.media.models import MediaFile
from app.runtime import Runtime
from tests.conftest import Customer
from tests.jobs.conftest import t2i
from tests.support.apps import wait_for_terminal

HOUR_MS = 3_600_000


async def finished_task(
    client: httpx.AsyncClient,
    customer: Customer,
    prompt: str,
    *,
    request_id: str | None = None,
) -> str:
    """A task run to its end by the app's workers; its id."""
    headers = dict(customer.headers)
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    response = await client.post("/api/v1/jobs/createTask", json=t2i(prompt), headers=headers)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"]["taskId"]
    await wait_for_terminal(client, customer.headers, task_id)
    return task_id


async def age_task(runtime: Runtime, task_id: str, *, finished_ms_ago: int) -> None:
    """Make the task look finished that long ago (and created a minute before)."""
    finished = now_ms() - finished_ms_ago
    async with runtime.sessions() as session:
        await session.execute(
            update(Task)
            .where(col(Task.id) == task_id)
            .values(completed_at=finished, updated_at=finished, created_at=finished - 60_000)
        )
        await session.commit()


async def age_created(runtime: Runtime, task_id: str, *, days: int) -> None:
    """A waiting task created long ago (its completed_at stays empty)."""
    async with runtime.sessions() as session:
        await session.execute(
            update(Task).where(col(Task.id) == task_id).values(created_at=now_ms() - days * DAY_MS)
        )
        await session.commit()


async def age_group(runtime: Runtime, request_id: str, *, created_ms_ago: int) -> None:
    async with runtime.sessions() as session:
        await session.execute(
            update(TaskGroup)
            .where(col(TaskGroup.request_id) == request_id)
            .values(created_at=now_ms() - created_ms_ago)
        )
        await session.commit()


async def add_delivery(runtime: Runtime, task: Task, status: DeliveryStatus) -> str:
    """A callback delivery of the task with one attempt, in the given state."""
    now = now_ms()
    delivery = CallbackDelivery(
        id=new_id("msg"),
        task_id=task.id,
        account_id=task.account_id,
        url="https://hooks.example.com/gengate",
        status=status.value,
        attempts=1,
        due_at=now,
        created_at=now,
        updated_at=now,
    )
    async with runtime.sessions() as session:
        session.add(delivery)
        await session.flush()
        session.add(CallbackAttempt(delivery_id=delivery.id, number=1, started_at=now))
        await session.commit()
    return delivery.id


async def get_task(runtime: Runtime, task_id: str) -> Task | None:
    async with runtime.sessions() as session:
        return await session.get(Task, task_id)


async def files_of(runtime: Runtime, task_id: str) -> list[MediaFile]:
    async with runtime.sessions() as session:
        stmt = select(MediaFile).where(col(MediaFile.task_id) == task_id)
        return list((await session.execute(stmt)).scalars())


async def count_rows(runtime: Runtime, model: type, **where: str) -> int:  # type: ignore[type-arg]
    async with runtime.sessions() as session:
        stmt = select(func.count()).select_from(model)
        for name, value in where.items():
            stmt = stmt.where(getattr(model, name) == value)
        return int(await session.scalar(stmt) or 0)


@dataclass(frozen=True)
class Books:
    """An account's balance and its ledger: the invariant is balance == ledger_sum."""

    balance: int
    ledger_sum: int
    ledger_ids: list[int]


async def books_of(runtime: Runtime, account_id: str) -> Books:
    async with runtime.sessions() as session:
        balance = await session.scalar(
            select(col(Account.balance)).where(col(Account.id) == account_id)
        )
        rows = (
            await session.execute(
                select(col(LedgerEntry.id), col(LedgerEntry.amount))
                .where(col(LedgerEntry.account_id) == account_id)
                .order_by(col(LedgerEntry.id))
            )
        ).all()
    return Books(
        balance=int(balance or 0),
        ledger_sum=sum(amount for _id, amount in rows),
        ledger_ids=[row_id for row_id, _amount in rows],
    )
