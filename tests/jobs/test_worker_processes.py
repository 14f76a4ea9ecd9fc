"""Several `gengate worker` processes share one queue: each task runs exactly once."""

import asyncio
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app.credits.models import LedgerEntry
from app.jobs.models import Task
from tests.conftest import make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import eventually, runtime_of
from tests.support.server import start_server


async def test_two_worker_processes_share_the_queue(
    idle_app: tuple[FastAPI, httpx.AsyncClient], settings_env: dict[str, str], tmp_path: Path
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime, tier="pro")
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/v1/jobs/createTask",
                json=t2i(f"task {i} [[delay:100]]", resolution="1K"),
                headers=customer.headers,
            )
            for i in range(16)
        )
    )
    assert {r.status_code for r in responses} == {200}
    env = {**settings_env, "GENGATE_WORKER_CONCURRENCY": "3"}
    workers = [start_server(env, tmp_path, args=["worker"], ready_path=None) for _ in range(2)]
    try:

        async def all_done() -> bool:
            async with runtime.sessions() as s:
                waiting = await s.scalar(
                    select(func.count()).where(Task.status.in_(["queued", "generating"]))  # type: ignore[attr-defined]
                )
            return waiting == 0

        await eventually(all_done, within_s=60, what="both workers to drain the queue")
    finally:
        for worker in workers:
            worker.stop()
    async with runtime.sessions() as s:
        tasks = list((await s.execute(select(Task))).scalars())
        settles = await s.scalar(
            select(func.count()).where(LedgerEntry.kind == "settle")  # type: ignore[arg-type]
        )
    assert {t.status for t in tasks} == {"success"}
    assert {t.attempts for t in tasks} == {1}
    assert settles == 16
    # Both processes were up while the queue drained.
    assert all("started" in w.log() for w in workers)
