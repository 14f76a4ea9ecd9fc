import re
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlmodel import col

from app.credits.models import LedgerEntry
from app.jobs.models import Task
from app.runtime import Runtime
from tests.conftest import Customer
from tests.jobs.conftest import t2i

ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
TASK_FIELDS = {
    "id",
    "model",
    "style",
    "cost",
    "request",
    "response",
    "status",
    "startedAt",
    "finishedAt",
    "createdAt",
    "updatedAt",
    "parentTaskId",
    "action",
    "index",
}


async def create_task(
    client: httpx.AsyncClient, customer: Customer, body: dict[str, Any] | None = None
) -> str:
    """A task through jobs.createTask: the /v1 list shows those too."""
    response = await client.post(
        "/api/v1/jobs/createTask", json=body or t2i(), headers=customer.headers
    )
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"]["taskId"]
    return task_id


async def set_created_at(runtime: Runtime, task_id: str, created_at_ms: int) -> None:
    """Backdate a task (arranging history that would otherwise take days to make)."""
    async with runtime.sessions() as session:
        await session.execute(
            update(Task).where(Task.id == task_id).values(created_at=created_at_ms)  # type: ignore[arg-type]
        )
        await session.commit()


async def list_page(client: httpx.AsyncClient, customer: Customer, **params: Any) -> httpx.Response:
    return await client.get("/v1/tasks", params=params, headers=customer.headers)


async def ledger_of(runtime: Runtime, customer: Customer) -> list[tuple[str, int, str | None]]:
    """The account's ledger: (kind, amount, task id), oldest first."""
    async with runtime.sessions() as session:
        rows = await session.execute(
            select(col(LedgerEntry.kind), col(LedgerEntry.amount), col(LedgerEntry.task_id))
            .where(col(LedgerEntry.account_id) == customer.account.id)
            .order_by(col(LedgerEntry.id))
        )
        return [(kind, amount, task_id) for kind, amount, task_id in rows.all()]


async def tasks_of(runtime: Runtime, customer: Customer) -> int:
    """How many tasks the account has, whichever surface made them."""
    async with runtime.sessions() as session:
        count = await session.scalar(
            select(func.count()).where(col(Task.account_id) == customer.account.id)
        )
        return int(count or 0)


async def balance_of(client: httpx.AsyncClient, customer: Customer) -> int:
    response = await client.get("/api/v1/account", headers=customer.headers)
    assert response.status_code == 200, response.text
    balance: int = response.json()["data"]["balance"]
    return balance
