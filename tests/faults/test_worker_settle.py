"""A result finished while the database is away is kept and settled once it is back:
rendered once, settled once, never made again."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col

from app.credits.models import LedgerEntry
from app.jobs.models import Task
from app.media.service import list_task_media
from tests.faults.conftest import Records, create_slow_task, runtime_of
from tests.support.apps import eventually, wait_for_terminal
from tests.support.faultproxy import FaultProxy


async def test_a_result_stored_during_an_outage_is_settled_once_and_never_made_again(
    faulty: tuple[FastAPI, httpx.AsyncClient], db_proxy: FaultProxy, worker_log: Records
) -> None:
    app, client = faulty
    runtime = runtime_of(app)
    customer, task_id = await create_slow_task(client, runtime)

    async def generating() -> bool:
        response = await client.get(
            "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=customer.headers
        )
        data: dict[str, Any] = response.json()["data"]
        return data.get("stage") == "generating"

    await eventually(generating, within_s=20, what="the task to be generating")
    await db_proxy.cut()

    async def settle_failed() -> bool:
        return any(task_id in m and "keeping the result" in m for m in worker_log.messages)

    await eventually(settle_failed, within_s=20, what="the settle to fail for the outage")
    stored = sorted(p for p in runtime.media_store.root.rglob("*") if p.parent.name == task_id)
    assert stored, "the result must be kept in storage while the settle waits"

    await db_proxy.restore()
    data = await wait_for_terminal(client, customer.headers, task_id, within_s=30)
    assert data["state"] == "success", data

    async with runtime.sessions() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        kinds = list(
            await session.scalars(
                select(col(LedgerEntry.kind))
                .where(col(LedgerEntry.task_id) == task_id)
                .order_by(col(LedgerEntry.id))
            )
        )
        media = await list_task_media(session, task_id=task_id)
    assert task.attempts == 1, "the task was claimed (and rendered) more than once"
    assert kinds == ["hold", "settle"]
    assert sorted(runtime.media_store.absolute(m.path) for m in media) == stored
    assert all(path.exists() for path in stored)
