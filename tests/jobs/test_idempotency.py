"""X-Request-Id: one task and one charge per key and id, whatever the concurrency."""

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app.credits.models import LedgerEntry
from app.jobs.models import Task
from tests.conftest import make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import runtime_of


async def _count(app: FastAPI, model: type, **where: str) -> int:  # type: ignore[type-arg]
    async with runtime_of(app).sessions() as s:
        stmt = select(func.count()).select_from(model)
        for name, value in where.items():
            stmt = stmt.where(getattr(model, name) == value)
        return int(await s.scalar(stmt) or 0)


async def test_replay_returns_the_same_task_and_charges_once(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    headers = {**customer.headers, "X-Request-Id": "demo-image-001"}
    first = await client.post("/api/v1/jobs/createTask", json=t2i(), headers=headers)
    second = await client.post("/api/v1/jobs/createTask", json=t2i(), headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json()["data"] == second.json()["data"]
    assert await _count(app, Task) == 1
    assert await _count(app, LedgerEntry, kind="hold") == 1

    # The same parameters in the other argument format are the same request.
    flat = {"model": "gpt-image-2-text-to-image", "prompt": "a red bicycle"}
    third = await client.post("/api/v1/jobs/createTask", json=flat, headers=headers)
    assert third.json()["data"]["taskId"] == first.json()["data"]["taskId"]


async def test_reuse_with_other_parameters_is_refused(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    headers = {**customer.headers, "X-Request-Id": "req-1"}
    first = await client.post("/api/v1/jobs/createTask", json=t2i("one"), headers=headers)
    clash = await client.post("/api/v1/jobs/createTask", json=t2i("two"), headers=headers)
    assert clash.status_code == 409
    body = clash.json()
    assert body["msg"] == "X-Request-Id was already used with different parameters"
    assert body["data"]["taskId"] == first.json()["data"]["taskId"]
    assert await _count(app, Task) == 1


async def test_request_ids_are_per_key(idle_app: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = idle_app
    alice, bob = await make_customer(runtime_of(app)), await make_customer(runtime_of(app))
    ids = set()
    for who in (alice, bob):
        response = await client.post(
            "/api/v1/jobs/createTask",
            json=t2i(),
            headers={**who.headers, "X-Request-Id": "shared-id"},
        )
        ids.add(response.json()["data"]["taskId"])
    assert len(ids) == 2


async def test_concurrent_duplicates_make_one_task_and_one_charge(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    # Replays count against the rate limit like any call: use a tier that allows 100.
    customer = await make_customer(runtime_of(app), credits=1000, tier="pro")
    headers = {**customer.headers, "X-Request-Id": "burst-1"}
    responses = await asyncio.gather(
        *(client.post("/api/v1/jobs/createTask", json=t2i(), headers=headers) for _ in range(100))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["data"]["taskId"] for r in responses}) == 1
    assert await _count(app, Task) == 1
    assert await _count(app, LedgerEntry, kind="hold") == 1
    account = await client.get("/api/v1/account", headers=customer.headers)
    estimate = await client.post("/api/v1/jobs/estimate", json=t2i(), headers=customer.headers)
    assert account.json()["data"]["balance"] == 1000 - estimate.json()["data"]["credits"]


async def test_request_id_length_is_checked(idle_app: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    response = await client.post(
        "/api/v1/jobs/createTask",
        json=t2i(),
        headers={**customer.headers, "X-Request-Id": "x" * 201},
    )
    assert response.status_code == 400 and response.json()["data"]["field"] == "X-Request-Id"
