"""With the database cut, every surface answers 503 / an unavailable tool error, nothing is
charged, /readyz answers within 2 s, and after the restore everything works again."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlmodel import col

from app.credits.service import ledger_sum
from app.jobs.models import Task
from tests.conftest import Customer, make_customer
from tests.faults.conftest import CREATE, UNAVAILABLE, assert_unavailable, mcp_call, runtime_of
from tests.support.apps import eventually
from tests.support.faultproxy import FaultProxy


async def rest_calls(
    client: httpx.AsyncClient, customer: Customer, task_id: str
) -> list[httpx.Response]:
    """createTask, recordInfo and account: the calls a client makes all the time."""
    return [
        await client.post("/api/v1/jobs/createTask", json=CREATE, headers=customer.headers),
        await client.get(
            "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=customer.headers
        ),
        await client.get("/api/v1/account", headers=customer.headers),
    ]


async def charged(app: FastAPI, customer: Customer) -> tuple[int, int]:
    """The account's ledger sum and task count."""
    runtime = runtime_of(app)
    async with runtime.sessions() as session:
        total = await ledger_sum(session, account_id=customer.account.id)
        tasks = await session.scalar(
            select(func.count())
            .select_from(Task)
            .where(col(Task.account_id) == customer.account.id)
        )
    return total, int(tasks or 0)


async def test_rest_and_mcp_answer_unavailable_while_the_database_is_cut(
    faulty: tuple[FastAPI, httpx.AsyncClient], db_proxy: FaultProxy
) -> None:
    app, client = faulty
    runtime = runtime_of(app)
    warm = await make_customer(runtime)  # its key is cached: the route bodies meet the outage
    cold = await make_customer(runtime)  # its key is not: authentication meets the outage
    created = await client.post("/api/v1/jobs/createTask", json=CREATE, headers=warm.headers)
    assert created.status_code == 200, created.text
    task_id = created.json()["data"]["taskId"]
    before = await charged(app, warm), await charged(app, cold)

    await db_proxy.cut()
    for customer in (warm, cold):
        for response in await rest_calls(client, customer, task_id):
            assert_unavailable(response)
    for tool, arguments in (
        ("generate_image", {"model": CREATE["model"], "prompt": "A red bicycle"}),
        ("get_generation_status", {"taskId": task_id}),
        ("get_account", {}),
    ):
        response = await mcp_call(client, warm, tool, arguments)
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        assert result["isError"] is True
        assert result["structuredContent"] == UNAVAILABLE
    refused = await mcp_call(client, cold, "get_account", {})
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert refused.json() == UNAVAILABLE

    await db_proxy.restore()
    assert (await charged(app, warm), await charged(app, cold)) == before
    for response in await rest_calls(client, warm, task_id):
        assert response.status_code == 200, response.text
    assert (await client.get("/api/v1/account", headers=cold.headers)).status_code == 200
    for customer in (warm, cold):
        response = await mcp_call(client, customer, "get_account", {})
        assert response.json()["result"]["isError"] is False


async def test_readyz_answers_within_two_seconds_whatever_the_database_does(
    faulty: tuple[FastAPI, httpx.AsyncClient], db_proxy: FaultProxy
) -> None:
    _app, client = faulty
    assert (await client.get("/readyz")).status_code == 200

    await db_proxy.cut()
    started = time.monotonic()
    response = await client.get("/readyz")
    assert time.monotonic() - started < 2.0
    assert response.status_code == 503
    assert response.json()["checks"]["database"] in ("unavailable", "timeout")
    assert response.headers["Retry-After"] == "5"

    await db_proxy.restore()
    await eventually(ready(client), within_s=10, what="/readyz to answer 200 after the restore")

    # A server that accepts connections and then says nothing: the check must give up.
    await db_proxy.stall()
    started = time.monotonic()
    response = await client.get("/readyz")
    assert time.monotonic() - started < 2.0
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "timeout"

    await db_proxy.restore()
    await eventually(ready(client), within_s=10, what="/readyz to answer 200 after the stall")


def ready(client: httpx.AsyncClient) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return (await client.get("/readyz")).status_code == 200

    return probe
