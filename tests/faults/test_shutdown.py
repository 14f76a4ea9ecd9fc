"""Processes stopped mid-work, for real: a worker SIGTERMed mid-task gives the task back
for another worker at once; an API process SIGKILLed mid-burst of creates leaves every task
with its hold and every hold with its task; SIGTERM to `serve --workers N` stops every
process gracefully.

The processes reach PostgreSQL directly (no fault proxy): the faults here are the kills.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from app.accounts.models import Account
from app.core.config import Settings
from app.core.ids import now_ms
from app.credits.models import LedgerEntry
from app.jobs.models import Task
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.faults.conftest import REDIS_URL
from tests.jobs.conftest import t2i
from tests.support.apps import eventually, running_app, runtime_of, worker_running
from tests.support.backends import fresh_database
from tests.support.server import LiveServer, start_server

pytestmark = pytest.mark.timeout(90)

# Long enough that a stopped process's task is still rendering when it is stopped.
SLOW_RENDER = {"GENGATE_LOCAL_DELAY_MS": "60000", "GENGATE_SHUTDOWN_GRACE_SECONDS": "0.3"}
BULK_TIER = {"create_per_minute": 100_000, "query_per_minute": 100_000}
UNLIMITED = 1_000_000


@pytest.fixture
def database_url(postgres_template: str, tmp_path: Path) -> str:
    """The suite's PostgreSQL database for these tests, reached directly."""
    return fresh_database(postgres_template, tmp_path)


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    """A tier without limits (for the burst) and Redis (for `serve --workers 2`)."""
    tiers = {**Settings(_env_file=None).tiers}  # type: ignore[call-arg]
    bulk = {**BULK_TIER, "max_active_tasks": UNLIMITED}
    tiers_json = {name: limits.model_dump() for name, limits in tiers.items()} | {"bulk": bulk}
    return settings_env | {"GENGATE_TIERS": json.dumps(tiers_json), "GENGATE_REDIS_URL": REDIS_URL}


@pytest.fixture
async def test_runtime(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """The test's own view of the database (and an app without workers to ask it)."""
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None, workers_in_process=False)  # type: ignore[call-arg]
    async with running_app(settings) as (app, client):
        yield runtime_of(app), client


async def _task(runtime: Runtime, task_id: str) -> Task:
    async with runtime.sessions() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        return task


async def _create(client: httpx.AsyncClient, customer: Customer, prompt: str) -> str:
    created = await client.post(
        "/api/v1/jobs/createTask", json=t2i(prompt), headers=customer.headers
    )
    assert created.status_code == 200, created.text
    return str(created.json()["data"]["taskId"])


async def _claimed_by(runtime: Runtime, task_id: str, pid: int) -> bool:
    """Whether a worker of process `pid` holds the task (owners are host:pid:token)."""
    task = await _task(runtime, task_id)
    return f":{pid}:" in (task.lease_owner or "") and task.status == "generating"


async def _ledger(runtime: Runtime, account_id: str) -> tuple[list[LedgerEntry], int]:
    """The account's ledger rows and its balance."""
    async with runtime.sessions() as session:
        rows = await session.scalars(
            select(LedgerEntry).where(col(LedgerEntry.account_id) == account_id)
        )
        balance = await session.scalar(
            select(col(Account.balance)).where(col(Account.id) == account_id)
        )
        return list(rows), int(balance or 0)


async def test_a_worker_sigtermed_mid_task_hands_it_to_another_at_once(
    test_runtime: tuple[Runtime, httpx.AsyncClient],
    settings_env: dict[str, str],
    tmp_path: Path,
) -> None:
    runtime, client = test_runtime
    customer = await make_customer(runtime)
    stopping = start_server(settings_env | SLOW_RENDER, tmp_path, args=["worker"], ready_path=None)
    try:
        task_id = await _create(client, customer, "a lighthouse")

        async def claimed() -> bool:
            return await _claimed_by(runtime, task_id, stopping.process.pid)

        await eventually(claimed, within_s=30, what="the worker process to claim the task")
        # The other worker (this process's, rendering at full speed) is up before the signal.
        async with worker_running(runtime):
            stopping.process.send_signal(signal.SIGTERM)
            signaled = time.monotonic()

            async def finished() -> Task | None:
                task = await _task(runtime, task_id)
                return task if task.status == "success" else None

            done = await eventually(finished, within_s=2, what="another worker to finish it")
            took_s = time.monotonic() - signaled
        assert stopping.process.wait(timeout=10) == 0, stopping.log()
    finally:
        stopping.stop()
    assert f"task {task_id} given back to the queue" in stopping.log()
    assert took_s < 2
    assert done.attempts == 1, "the give-back counted as an attempt"
    entries, balance = await _ledger(runtime, customer.account.id)
    assert sorted(e.kind for e in entries if e.task_id == task_id) == ["hold", "settle"]
    assert balance == sum(e.amount for e in entries)


async def test_an_api_process_killed_mid_burst_leaves_no_task_without_its_hold(
    test_runtime: tuple[Runtime, httpx.AsyncClient],
    settings_env: dict[str, str],
    tmp_path: Path,
) -> None:
    runtime, _ = test_runtime
    customer = await make_customer(runtime, credits=UNLIMITED, tier="bulk")
    env = settings_env | {"GENGATE_WORKERS_IN_PROCESS": "false"}
    server = start_server(env, tmp_path, ready_path=None)
    answered: list[str] = []
    kill_after = asyncio.Event()

    async def create(http: httpx.AsyncClient, i: int) -> None:
        response = await http.post(
            "/api/v1/jobs/createTask", json=t2i(f"burst {i}"), headers=customer.headers
        )
        assert response.status_code == 200, response.text
        answered.append(response.json()["data"]["taskId"])
        if len(answered) >= 40:
            kill_after.set()

    async def kill() -> None:
        await kill_after.wait()
        server.process.send_signal(signal.SIGKILL)

    limits = httpx.Limits(max_connections=16)
    try:
        await _serving(server)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=10) as http:
            killing = asyncio.create_task(kill())
            results = await asyncio.gather(
                *(create(http, i) for i in range(200)), return_exceptions=True
            )
            await asyncio.wait_for(killing, timeout=10)
    finally:
        server.stop()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(f, httpx.TransportError) for f in failures), failures[:3]
    assert failures, "the kill came after the burst: nothing was cut off"
    assert server.process.returncode == -signal.SIGKILL

    async with runtime.sessions() as session:
        task_ids = set(
            await session.scalars(
                select(col(Task.id)).where(col(Task.account_id) == customer.account.id)
            )
        )
    entries, balance = await _ledger(runtime, customer.account.id)
    holds = {e.task_id for e in entries if e.kind == "hold"}
    assert holds == task_ids, "a hold without its task, or a task without its hold"
    assert set(answered) <= task_ids, "a create answered 200 left no task"
    assert balance == sum(e.amount for e in entries)
    assert balance == UNLIMITED - sum(t.price for t in await _tasks(runtime, task_ids))


async def _tasks(runtime: Runtime, task_ids: set[str]) -> list[Task]:
    async with runtime.sessions() as session:
        return list(await session.scalars(select(Task).where(col(Task.id).in_(task_ids))))


STARTED = re.compile(r"Started server process \[(\d+)\]")


async def test_sigterm_to_serve_with_workers_stops_every_process_and_gives_back_its_tasks(
    test_runtime: tuple[Runtime, httpx.AsyncClient],
    settings_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The parent passes SIGTERM to its API processes and waits: each runs its shutdown,
    and the embedded worker holding a task gives it back (due now, its claim undone)."""
    runtime, _ = test_runtime
    customer = await make_customer(runtime)
    env = settings_env | SLOW_RENDER | {"GENGATE_WORKER_CONCURRENCY": "1"}
    server = start_server(env, tmp_path, args=["serve", "--workers", "2"], ready_path=None)
    try:
        await _serving(server)
        await eventually(
            _async(lambda: len(set(STARTED.findall(server.log()))) == 2), what="two processes"
        )
        children = {int(pid) for pid in STARTED.findall(server.log())}
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            task_id = await _create(http, customer, "a lighthouse")

        async def claimed() -> bool:
            owner = (await _task(runtime, task_id)).lease_owner or ""
            return any(f":{pid}:" in owner for pid in children)

        await eventually(claimed, within_s=30, what="an API process's worker to claim it")
        server.process.send_signal(signal.SIGTERM)
        signaled_ms = now_ms()
        assert await asyncio.to_thread(server.process.wait, 30) == 0, server.log()
    finally:
        server.stop()
    log = server.log()
    assert log.count("Application shutdown complete") == 2, log
    assert not any(_alive(pid) for pid in children)
    assert f"task {task_id} given back to the queue" in log
    task = await _task(runtime, task_id)
    assert (task.status, task.lease_owner, task.attempts) == ("queued", None, 0)
    assert signaled_ms <= task.due_at <= now_ms()
    entries, _ = await _ledger(runtime, customer.account.id)
    assert [e.kind for e in entries if e.task_id == task_id] == ["hold"]


async def _serving(server: LiveServer) -> None:
    """Wait for the server to answer /readyz. Inside the test's try, so that a server too
    slow to start is still stopped (start_server's own wait leaves it running)."""

    async def ready() -> bool:
        assert server.process.poll() is None, f"server exited early:\n{server.log()}"
        try:
            async with httpx.AsyncClient(timeout=1) as http:
                return (await http.get(server.base_url + "/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(ready, within_s=60, what="the server to answer /readyz")


def _async(predicate):  # type: ignore[no-untyped-def]
    async def probe() -> bool:
        return bool(predicate())

    return probe


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
