"""Media fixtures: a task row to hang files on."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlmodel import col

from app.core.ids import new_id, now_ms
from app.jobs.models import Task, TaskStatus
from app.keys.models import ApiKey
from app.runtime import Runtime
from tests.conftest import Customer


@dataclass(frozen=True)
class TaskRef:
    id: str
    account_id: str


async def insert_task(runtime: Runtime, customer: Customer) -> TaskRef:
    async with runtime.sessions() as session:
        key_id = await session.scalar(
            select(col(ApiKey.id)).where(col(ApiKey.account_id) == customer.account.id)
        )
        assert key_id is not None
        now = now_ms()
        task = Task(
            id=new_id("task"),
            account_id=customer.account.id,
            api_key_id=key_id,
            model="local/test",
            media_type="image",
            input_json="{}",
            status=TaskStatus.SUCCESS.value,
            price=0,
            provider="local",
            due_at=now,
            deadline_at=now + 60_000,
            created_at=now,
            updated_at=now,
        )
        session.add(task)
        await session.commit()
        return TaskRef(id=task.id, account_id=task.account_id)


@pytest.fixture
async def task(runtime: Runtime, customer: Customer) -> TaskRef:
    return await insert_task(runtime, customer)
