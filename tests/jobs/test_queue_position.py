"""queuePosition counts up to QUEUE_POSITION_CAP and saturates there."""

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import insert, select

from app.jobs.models import Task
from app.jobs.views import QUEUE_POSITION_CAP, describe_task
from tests.conftest import make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import runtime_of


async def _position(client: httpx.AsyncClient, headers: dict[str, str], task_id: str) -> Any:
    answer = await client.get(
        "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["queuePosition"]


async def test_queue_position_saturates_at_the_cap(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    first = await client.post("/api/v1/jobs/createTask", json=t2i(), headers=customer.headers)
    first_id = first.json()["data"]["taskId"]
    async with runtime.sessions() as s:
        template = (await s.execute(select(Task).where(Task.id == first_id))).scalar_one()  # type: ignore[arg-type]
        row = template.model_dump()
        # A backlog behind the first task, written directly: the cap plus some.
        rows = [
            {**row, "id": f"task_backlog_{i:05d}", "due_at": row["due_at"] + 1 + i}
            for i in range(QUEUE_POSITION_CAP + 50)
        ]
        await s.execute(insert(Task), rows)
        await s.commit()
    assert await _position(client, customer.headers, first_id) == 1
    assert await _position(client, customer.headers, "task_backlog_00000") == 2
    assert await _position(client, customer.headers, "task_backlog_00997") == QUEUE_POSITION_CAP - 1
    assert await _position(client, customer.headers, "task_backlog_00998") == QUEUE_POSITION_CAP
    assert await _position(client, customer.headers, "task_backlog_01049") == QUEUE_POSITION_CAP
    async with runtime.sessions() as s:  # the other path (MCP, callbacks) agrees
        last = await s.get(Task, "task_backlog_01049")
        assert last is not None
        view = await describe_task(s, runtime=runtime, task=last, base_url="http://x")
    assert view.queue_position == QUEUE_POSITION_CAP
