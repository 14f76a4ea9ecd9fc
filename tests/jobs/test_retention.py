"""Retention: old finished tasks go with their files and rows; everything else stays.

"Old" is made by rewriting timestamps, never by waiting; runs take an explicit `now`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import update
from sqlmodel import col

from app.callbacks.models import CallbackAttempt, CallbackDelivery, DeliveryStatus
from app.channels.models import TaskAttempt
from app.core.config import Settings
from app.core.ids import now_ms
from app.credits.models import LedgerEntry
from app.maintenance.jobs import claim_job
from app.maintenance.models import MaintenanceJob
from app.maintenance.pruner import LEASE_MS, RETENTION_JOB, RETRY_S, run_retention
from app.maintenance.retention import DAY_MS, PruneCounts, count_prunable, cutoff_for
from app.media.storage import MediaStore
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import eventually, running_app, runtime_of, worker_running
from tests.support.retention import (
    HOUR_MS,
    add_delivery,
    age_created,
    age_group,
    age_task,
    books_of,
    count_rows,
    files_of,
    finished_task,
    get_task,
)


@pytest.fixture
async def small_batches(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app without embedded workers, pruning two tasks per transaction."""
    idle = settings.model_copy(update={"workers_in_process": False, "prune_batch_size": 2})
    async with running_app(idle) as pair:
        yield pair


async def _queued(client: httpx.AsyncClient, customer: Customer, prompt: str) -> str:
    response = await client.post(
        "/api/v1/jobs/createTask", json=t2i(prompt), headers=customer.headers
    )
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"]["taskId"]
    return task_id


class _StoreWith:
    """The real store, with `before_delete(task_id)` called before each delete (to fail it)."""

    def __init__(self, store: MediaStore, *, before_delete: Callable[[str], None]) -> None:
        self._store = store
        self._before_delete = before_delete

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def delete_task(self, task_id: str, paths: Sequence[str]) -> None:
        self._before_delete(task_id)
        self._store.delete_task(task_id, paths)


def _with_store(runtime: Runtime, store: _StoreWith) -> Runtime:
    return dataclasses.replace(runtime, media_store=store)  # type: ignore[arg-type]


async def _planned(runtime: Runtime, *, days: int, now: int) -> PruneCounts:
    async with runtime.sessions() as session:
        return await count_prunable(session, cutoff=cutoff_for(now, days))


def _gone_from_store(runtime: Runtime, paths: Sequence[str]) -> bool:
    for path in paths:
        try:
            runtime.media_store.read_bytes(path)
        except FileNotFoundError:
            continue
        return False
    return True


async def test_old_finished_tasks_go_and_everything_else_stays(
    small_batches: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = small_batches
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    async with worker_running(runtime):
        old = [await finished_task(client, customer, f"old {n}") for n in range(3)]
        recent = await finished_task(client, customer, "recent")
        delivering = await finished_task(client, customer, "still delivering")
    canceled = await _queued(client, customer, "canceled")
    response = await client.post(
        "/api/v1/jobs/cancel", params={"taskId": canceled}, headers=customer.headers
    )
    assert response.status_code == 200, response.text
    waiting = await _queued(client, customer, "waiting")

    for task_id in [*old, canceled, delivering]:
        await age_task(runtime, task_id, finished_ms_ago=31 * DAY_MS)
    await age_task(runtime, recent, finished_ms_ago=29 * DAY_MS)
    await age_created(runtime, waiting, days=40)
    for task_id, status in [
        (old[0], DeliveryStatus.DELIVERED),
        (old[1], DeliveryStatus.FAILED),
        (delivering, DeliveryStatus.PENDING),
        (recent, DeliveryStatus.DELIVERED),
    ]:
        task = await get_task(runtime, task_id)
        assert task is not None
        await add_delivery(runtime, task, status)

    doomed = [*old, canceled]
    doomed_files = [f for task_id in doomed for f in await files_of(runtime, task_id)]
    assert len(doomed_files) == 3 and not _gone_from_store(runtime, [f.path for f in doomed_files])
    assert await count_rows(runtime, TaskAttempt, task_id=old[0]) > 0
    books = await books_of(runtime, customer.account.id)
    assert books.balance == books.ledger_sum

    now = now_ms()
    planned = await _planned(runtime, days=30, now=now)
    assert planned == PruneCounts(
        tasks=4,
        files=3,
        bytes=sum(f.size_bytes for f in doomed_files),
        deliveries=2,
        request_groups=0,
    )
    run = await run_retention(runtime, owner="test", days=30, now=now)
    assert run is not None and run.ended == "done" and run.counts == planned

    for task_id in doomed:
        assert await get_task(runtime, task_id) is None
        assert await files_of(runtime, task_id) == []
        assert await count_rows(runtime, CallbackDelivery, task_id=task_id) == 0
        assert await count_rows(runtime, TaskAttempt, task_id=task_id) == 0
    assert _gone_from_store(runtime, [f.path for f in doomed_files])
    # Only the attempts of the deliveries that stay are left.
    assert await count_rows(runtime, CallbackAttempt) == 2
    gone = await client.get(
        "/api/v1/jobs/recordInfo", params={"taskId": old[0]}, headers=customer.headers
    )
    assert gone.status_code == 404

    for task_id in (recent, delivering, waiting):
        assert await get_task(runtime, task_id) is not None
    for task_id in (recent, delivering):
        kept = await files_of(runtime, task_id)
        assert kept and all(runtime.media_store.read_bytes(f.path) for f in kept)
        assert await count_rows(runtime, CallbackDelivery, task_id=task_id) == 1

    # The ledger is untouched, old tasks' rows included, and still adds up to the balance.
    assert await books_of(runtime, customer.account.id) == books
    assert await count_rows(runtime, LedgerEntry, task_id=old[0]) == 2  # hold and settle
    assert await _planned(runtime, days=30, now=now) == PruneCounts()


async def test_a_dry_run_deletes_nothing_and_counts_what_then_goes(
    small_batches: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = small_batches
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    async with worker_running(runtime):
        tasks = [await finished_task(client, customer, f"task {n}") for n in range(5)]
    for task_id in tasks:
        await age_task(runtime, task_id, finished_ms_ago=8 * DAY_MS)
    now = now_ms()

    first = await _planned(runtime, days=7, now=now)
    second = await _planned(runtime, days=7, now=now)
    assert first == second and first.tasks == 5 and first.files == 5 and first.bytes > 0
    assert all([await get_task(runtime, task_id) for task_id in tasks])

    # Three batches of at most two, each its own transaction.
    run = await run_retention(runtime, owner="test", days=7, now=now)
    assert run is not None and run.counts == first
    assert await count_rows(runtime, MaintenanceJob) == 1


async def test_idempotency_keys_answer_replays_for_24_hours(
    small_batches: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = small_batches
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    async with worker_running(runtime):
        young = await finished_task(client, customer, "young", request_id="young")
        aged = await finished_task(client, customer, "aged", request_id="aged")
    await age_task(runtime, young, finished_ms_ago=23 * HOUR_MS)
    await age_task(runtime, aged, finished_ms_ago=25 * HOUR_MS)
    groups = {}
    for request_id in ("young-group", "aged-group"):
        response = await client.post(
            "/v1/imagine",
            json={"n": 2, "prompt": "a fox"},
            headers={**customer.headers, "X-Request-Id": request_id},
        )
        assert response.status_code == 200, response.text
        groups[request_id] = response.json()["ids"]
    await age_group(runtime, "young-group", created_ms_ago=23 * HOUR_MS)
    await age_group(runtime, "aged-group", created_ms_ago=25 * HOUR_MS)

    run = await run_retention(runtime, owner="test", days=1, now=now_ms())
    assert run is not None and (run.counts.tasks, run.counts.request_groups) == (1, 1)

    async def replay(prompt: str, request_id: str) -> str:
        headers = {**customer.headers, "X-Request-Id": request_id}
        response = await client.post("/api/v1/jobs/createTask", json=t2i(prompt), headers=headers)
        assert response.status_code == 200, response.text
        task_id: str = response.json()["data"]["taskId"]
        return task_id

    assert await replay("young", "young") == young
    assert await replay("aged", "aged") != aged  # its key went with it: a new task

    async def group_replay(request_id: str) -> list[str]:
        response = await client.post(
            "/v1/imagine",
            json={"n": 2, "prompt": "a fox"},
            headers={**customer.headers, "X-Request-Id": request_id},
        )
        assert response.status_code == 200, response.text
        ids: list[str] = response.json()["ids"]
        return ids

    assert await group_replay("young-group") == groups["young-group"]
    assert await group_replay("aged-group") != groups["aged-group"]


async def test_racing_processes_run_the_job_once_per_interval(
    small_batches: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = small_batches
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    async with worker_running(runtime):
        tasks = [await finished_task(client, customer, f"task {n}") for n in range(3)]
    for task_id in tasks:
        await age_task(runtime, task_id, finished_ms_ago=2 * DAY_MS)
    interval_ms = int(runtime.settings.prune_interval_seconds * 1000)
    start = now_ms()

    async def race(now: int) -> list[int]:
        """Tasks each of six processes pruned, for those that got the job."""
        runs = await asyncio.gather(
            *(run_retention(runtime, owner=f"worker-{n}", days=1, now=now) for n in range(6))
        )
        return [run.counts.tasks for run in runs if run is not None]

    assert await race(start) == [3]
    assert await race(start + interval_ms - 1) == []
    assert await race(start + interval_ms) == [0]


async def test_a_claimed_job_is_not_claimed_again_until_its_lease_ends(
    small_batches: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    runtime = runtime_of(small_batches[0])
    now = now_ms()

    async def claim(owner: str, at: int, *, only_if_due: bool = True) -> bool:
        async with runtime.sessions() as session:
            claimed = await claim_job(
                session,
                name=RETENTION_JOB,
                owner=owner,
                now=at,
                lease_ms=LEASE_MS,
                only_if_due=only_if_due,
            )
            await session.commit()
        return claimed

    assert await claim("crashed", now)
    # Neither a worker nor an operator's prune takes a job a live process holds ...
    assert not await claim("worker", now + LEASE_MS - 1)
    assert not await claim("operator", now + LEASE_MS - 1, only_if_due=False)
    assert (
        await run_retention(runtime, owner="operator", days=1, now=now, only_if_due=False) is None
    )
    # ... and once its lease ran out (the process died), the next one does.
    assert await claim("worker", now + LEASE_MS)


async def test_a_file_the_store_cannot_delete_keeps_its_task(
    small_batches: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = small_batches
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    async with worker_running(runtime):
        stuck, fine = [await finished_task(client, customer, p) for p in ("stuck", "fine")]
    for task_id in (stuck, fine):
        await age_task(runtime, task_id, finished_ms_ago=2 * DAY_MS)

    def unreachable(task_id: str) -> None:
        if task_id == stuck:
            raise ConnectionError("bucket unreachable")

    failing = _with_store(runtime, _StoreWith(runtime.media_store, before_delete=unreachable))
    now = now_ms()
    run = await run_retention(failing, owner="test", days=1, now=now)
    assert run is not None and run.ended == "store_failed" and run.counts.tasks == 1
    assert await get_task(runtime, fine) is None
    kept = await files_of(runtime, stuck)
    assert kept and runtime.media_store.read_bytes(kept[0].path)
    async with runtime.sessions() as session:
        job = await session.get(MaintenanceJob, RETENTION_JOB)
    assert job is not None and job.lease_owner is None
    assert job.due_at >= now + RETRY_S * 1000  # tried again soon, not after the interval

    run = await run_retention(runtime, owner="test", days=1, now=job.due_at)
    assert run is not None and run.ended == "done" and run.counts.tasks == 1
    assert await get_task(runtime, stuck) is None


async def test_a_stopping_worker_hands_the_job_back_between_batches(
    small_batches: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = small_batches
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    async with worker_running(runtime):
        tasks = [await finished_task(client, customer, f"task {n}") for n in range(3)]
    for task_id in tasks:
        await age_task(runtime, task_id, finished_ms_ago=2 * DAY_MS)
    stop = asyncio.Event()
    # SIGTERM arrives while the first batch (two tasks) deletes its files.
    stopping = _with_store(
        runtime, _StoreWith(runtime.media_store, before_delete=lambda _: stop.set())
    )

    run = await run_retention(stopping, owner="test", days=1, now=now_ms(), stop=stop)
    assert run is not None and run.ended == "stopped" and run.counts.tasks == 2
    async with runtime.sessions() as session:
        job = await session.get(MaintenanceJob, RETENTION_JOB)
    assert job is not None and job.lease_owner is None and job.due_at <= now_ms()
    # Due at once: the next process carries on.
    run = await run_retention(runtime, owner="next", days=1, now=now_ms())
    assert run is not None and run.ended == "done" and run.counts.tasks == 1


async def test_workers_prune_when_retention_is_on(settings: Settings) -> None:
    on = settings.model_copy(update={"retention_days": 1})
    async with running_app(on) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        task_id = await finished_task(client, customer, "old")
        kept = await finished_task(client, customer, "new")
        await age_task(runtime, task_id, finished_ms_ago=DAY_MS + HOUR_MS)

        async def first_run_done() -> MaintenanceJob | None:
            async with runtime.sessions() as session:
                job = await session.get(MaintenanceJob, RETENTION_JOB)
            return job if job is not None and job.lease_owner is None else None

        # The embedded worker pruned at start, before anything was old; it is due again
        # only after the interval.
        job = await eventually(first_run_done, what="the embedded worker's first prune")
        assert job.due_at > now_ms() and await get_task(runtime, task_id) is not None
        async with runtime.sessions() as session:
            await session.execute(
                update(MaintenanceJob)
                .where(col(MaintenanceJob.name) == RETENTION_JOB)
                .values(due_at=now_ms())
            )
            await session.commit()

        async def pruned() -> bool:
            return await get_task(runtime, task_id) is None

        async with worker_running(runtime):  # a second process, which finds the job due
            await eventually(pruned, what="the old task to be pruned")
        assert await get_task(runtime, kept) is not None


def test_retention_below_a_day_is_refused(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="GENGATE_RETENTION_DAYS must be at least 1"):
        settings.model_validate({**settings.model_dump(), "retention_days": 0})
    assert (
        settings.model_validate({**settings.model_dump(), "retention_days": 1}).retention_days == 1
    )
