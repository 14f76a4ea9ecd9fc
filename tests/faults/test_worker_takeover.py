"""An outage that outlasts the lease: another worker may claim the task when the database
comes back, but the result already made is the one settled, once, and its files stay."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col

from app.core.config import Settings
from app.core.ids import now_ms
from app.credits.models import LedgerEntry
from app.jobs.models import Task
from app.jobs.worker import Worker
from app.media.service import list_task_media
from tests.faults.conftest import Records, create_slow_task, runtime_of
from tests.support.apps import eventually, wait_for_terminal
from tests.support.faultproxy import FaultProxy

LEASE_SECONDS = 1.5


@pytest.fixture
def fault_settings(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A lease far shorter than the outage below."""
    for name, value in {**settings_env, "GENGATE_LEASE_SECONDS": str(LEASE_SECONDS)}.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


async def test_a_settle_retry_outlasting_its_lease_still_settles_once(
    faulty: tuple[FastAPI, httpx.AsyncClient], db_proxy: FaultProxy, worker_log: Records
) -> None:
    app, client = faulty
    runtime = runtime_of(app)
    customer, task_id = await create_slow_task(client, runtime)

    async def generating() -> bool:
        async with runtime.sessions() as session:
            task = await session.get(Task, task_id)
            return task is not None and task.status == "generating"

    await eventually(generating, within_s=20, what="the task to be generating")
    await db_proxy.cut()
    cut_at_ms = now_ms()

    async def settle_failed() -> bool:
        return any(task_id in m and "keeping the result" in m for m in worker_log.messages)

    await eventually(settle_failed, within_s=20, what="the settle to fail for the outage")

    async def lease_ran_out() -> bool:
        return now_ms() > cut_at_ms + LEASE_SECONDS * 1000 + 200

    await eventually(lease_ran_out, within_s=10, what="the lease to run out")
    # A second worker, as on another host, is ready to take the task over at the restore.
    stop = asyncio.Event()
    other = asyncio.create_task(Worker(runtime).run(stop))
    try:
        await db_proxy.restore()
        data = await wait_for_terminal(client, customer.headers, task_id, within_s=30)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await other
    assert data["state"] == "success", data

    async with runtime.sessions() as session:
        kinds = list(
            await session.scalars(
                select(col(LedgerEntry.kind))
                .where(col(LedgerEntry.task_id) == task_id)
                .order_by(col(LedgerEntry.id))
            )
        )
        media = await list_task_media(session, task_id=task_id)
    assert kinds == ["hold", "settle"]
    assert media
    assert all(runtime.media_store.absolute(m.path).exists() for m in media)
