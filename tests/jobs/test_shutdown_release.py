"""A stopping worker gives its unfinished tasks back: due at once, still held, not counted
as an attempt (or a poll), and only while it still holds them."""

import asyncio
import contextlib
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.core.ids import now_ms
from app.credits.models import LedgerEntry
from app.jobs.lifecycle import fail_task
from app.jobs.models import Task
from app.jobs.queue import assign_channel, claim_due_tasks, give_back_task, release_task
from app.jobs.worker import Worker
from app.runtime import Runtime
from tests.conftest import make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import eventually, runtime_of

LEASE_MS = 30_000


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    return {**settings_env, "GENGATE_SHUTDOWN_GRACE_SECONDS": "0.2"}


@dataclass
class Queued:
    runtime: Runtime
    task_id: str


async def _queued(idle_app: tuple[FastAPI, httpx.AsyncClient], prompt: str = "a kite") -> Queued:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    created = await client.post(
        "/api/v1/jobs/createTask", json=t2i(prompt), headers=customer.headers
    )
    assert created.status_code == 200, created.text
    return Queued(runtime, created.json()["data"]["taskId"])


async def _claim(runtime: Runtime, owner: str, *, polls: bool = False) -> list[Task]:
    async with runtime.sessions() as s:
        claimed = await claim_due_tasks(s, owner=owner, limit=10, lease_ms=LEASE_MS, polls=polls)
        await s.commit()
    return claimed


async def _give_back(runtime: Runtime, task_id: str, owner: str, *, sent: bool) -> bool:
    async with runtime.sessions() as s:
        given = await give_back_task(s, task_id=task_id, owner=owner, sent=sent)
        await s.commit()
    return given


async def _task(runtime: Runtime, task_id: str) -> Task:
    async with runtime.sessions() as s:
        task = await s.get(Task, task_id)
        assert task is not None
        return task


async def _ledger(runtime: Runtime, task_id: str) -> list[str]:
    async with runtime.sessions() as s:
        rows = await s.scalars(
            select(LedgerEntry.kind).where(LedgerEntry.task_id == task_id)  # type: ignore[arg-type]
        )
        return list(rows)


async def test_a_task_nothing_holds_goes_back_to_queued_due_now_and_keeps_its_hold(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    queued = await _queued(idle_app)
    runtime, task_id = queued.runtime, queued.task_id
    [claimed] = await _claim(runtime, "stopping")
    assert claimed.attempts == 1
    before_ms = now_ms()

    assert await _give_back(runtime, task_id, "stopping", sent=True)

    task = await _task(runtime, task_id)
    assert (task.status, task.lease_owner, task.attempts, task.progress) == ("queued", None, 0, 0)
    assert before_ms <= task.due_at <= now_ms()
    assert await _ledger(runtime, task_id) == ["hold"]
    [again] = await _claim(runtime, "next")
    assert (again.id, again.lease_owner, again.attempts) == (task_id, "next", 1)


async def test_a_task_an_upstream_holds_goes_back_to_polling_not_to_a_new_submit(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    queued = await _queued(idle_app)
    runtime, task_id = queued.runtime, queued.task_id
    await _claim(runtime, "first")
    async with runtime.sessions() as s:
        await assign_channel(s, task_id=task_id, owner="first", channel="up")
        await release_task(s, task_id=task_id, owner="first", due_at=0, upstream_id="job-1")
        await s.commit()
    [polled] = await _claim(runtime, "stopping", polls=True)
    assert (polled.attempts, polled.polls) == (1, 1)

    assert await _give_back(runtime, task_id, "stopping", sent=False)

    task = await _task(runtime, task_id)
    assert (task.status, task.lease_owner) == ("generating", None)
    assert (task.upstream_id, task.channel, task.attempts, task.polls) == ("job-1", "up", 1, 0)
    assert await _claim(runtime, "next") == []  # not submitted again
    [again] = await _claim(runtime, "next", polls=True)
    assert (again.id, again.upstream_id, again.polls) == (task_id, "job-1", 1)
    assert await _ledger(runtime, task_id) == ["hold"]


async def test_a_sent_submit_keeps_its_channel_and_an_unsent_one_forgets_it(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """The channel of a submit that went out may hold the task (the next worker takes the
    crash path for it); one that never went out holds nothing."""
    queued = await _queued(idle_app)
    runtime, task_id = queued.runtime, queued.task_id
    for sent, channel, status in ((True, "up", "generating"), (False, None, "queued")):
        await _claim(runtime, "stopping")
        async with runtime.sessions() as s:
            await assign_channel(s, task_id=task_id, owner="stopping", channel="up")
            await s.commit()
        assert await _give_back(runtime, task_id, "stopping", sent=sent)
        task = await _task(runtime, task_id)
        assert (task.channel, task.status, task.attempts) == (channel, status, 0)


async def test_a_task_settled_or_taken_over_elsewhere_is_not_touched(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    queued = await _queued(idle_app)
    runtime, task_id = queued.runtime, queued.task_id
    await _claim(runtime, "stopping")
    async with runtime.sessions() as s:  # its lease ran out and another worker has it
        await release_task(s, task_id=task_id, owner="stopping", due_at=0)
        await s.commit()
    await _claim(runtime, "other")
    assert not await _give_back(runtime, task_id, "stopping", sent=True)
    taken = await _task(runtime, task_id)
    assert (taken.lease_owner, taken.attempts) == ("other", 2)

    async with runtime.sessions() as s:
        await fail_task(
            s, notifier=runtime.notifier, task_id=task_id, code="canceled", message="canceled"
        )
        await s.commit()
    settled = await _task(runtime, task_id)
    assert not await _give_back(runtime, task_id, "other", sent=True)
    assert await _task(runtime, task_id) == settled
    assert sorted(await _ledger(runtime, task_id)) == ["hold", "refund"]


async def test_a_stopping_worker_gives_back_a_render_it_cannot_finish_in_its_grace(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """The worker returns within the grace period (not the render's 30 s) and the task is
    due at once for the next worker, its claim undone."""
    queued = await _queued(idle_app, prompt="a slow kite [[delay:30000]]")
    runtime = queued.runtime
    worker, stop = Worker(runtime), asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:

        async def rendering() -> bool:
            task = await _task(runtime, queued.task_id)
            return task.lease_owner == worker.owner

        await eventually(rendering, within_s=10, what="the worker to claim the task")
        stop.set()
        await asyncio.wait_for(asyncio.shield(running), timeout=5)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    task = await _task(runtime, queued.task_id)
    assert (task.status, task.lease_owner, task.attempts) == ("queued", None, 0)
    assert task.due_at <= now_ms()
    assert await _ledger(runtime, queued.task_id) == ["hold"]
