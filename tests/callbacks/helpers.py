"""What the callback tests share: create a task with a callback, read its deliveries, run an
app or a worker with other settings, and check that attempts look alike on both sides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from standardwebhooks import Webhook

from app.core.config import Settings
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.support.apps import eventually, record_info, running_app, runtime_of
from tests.support.receiver import Received

T2I = "gpt-image-2-text-to-image"


async def create_task(
    client: httpx.AsyncClient,
    customer: Customer,
    url: str | None,
    prompt: str = "A red bicycle",
) -> str:
    body: dict[str, Any] = {"model": T2I, "input": {"prompt": prompt}}
    if url is not None:
        body["callBackUrl"] = url
    response = await client.post("/api/v1/jobs/createTask", json=body, headers=customer.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["taskId"])


async def record(client: httpx.AsyncClient, customer: Customer, task_id: str) -> dict[str, Any]:
    return await record_info(client, customer.headers, task_id)


async def callbacks(client: httpx.AsyncClient, customer: Customer, task_id: str) -> dict[str, Any]:
    response = await client.get(
        "/api/v1/jobs/callbacks", params={"taskId": task_id}, headers=customer.headers
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def settled_delivery(
    client: httpx.AsyncClient, customer: Customer, task_id: str, *, within_s: float = 30
) -> dict[str, Any]:
    """The task's newest delivery once it is delivered or failed."""

    async def probe() -> dict[str, Any] | None:
        listed = (await callbacks(client, customer, task_id))["deliveries"]
        return listed[0] if listed and listed[0]["state"] != "pending" else None

    # Polled gently: each read counts against the key's rate limit.
    return await eventually(
        probe, within_s=within_s, interval_s=0.1, what=f"task {task_id}'s callback to settle"
    )


async def webhook_secret(client: httpx.AsyncClient, customer: Customer) -> str:
    response = await client.get("/api/v1/account/webhook-secret", headers=customer.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["secret"])


def verify(secret: str, request: Received) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(request.body.decode(), request.headers)
    return payload


def check_attempts_match(delivery: dict[str, Any], received: list[Received], secret: str) -> None:
    """Every attempt the receiver saw is the same message (one webhook-id, the same bytes,
    each verified) and the server lists one attempt per request, each with what it got."""
    assert received, "the receiver got nothing"
    assert {r.headers["webhook-id"] for r in received} == {delivery["id"]}
    assert {r.body for r in received} == {received[0].body}
    for request in received:
        verify(secret, request)
    attempts = delivery["attempts"]
    assert [a["number"] for a in attempts] == list(range(1, len(received) + 1))
    for attempt in attempts:
        assert attempt["statusCode"] is not None or attempt["error"], attempt
        assert isinstance(attempt["latencyMs"], int) and attempt["latencyMs"] >= 0, attempt
        assert isinstance(attempt["time"], int), attempt


@asynccontextmanager
async def app_with(
    settings: Settings, **changes: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, Customer]]:
    """An app of its own with some settings changed, and a customer of it."""
    async with running_app(settings.model_copy(update=changes)) as (app, client):
        runtime = runtime_of(app)
        yield client, runtime, await make_customer(runtime)
