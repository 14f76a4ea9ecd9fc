import re
from typing import Any

import httpx
from sqlalchemy import update

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
