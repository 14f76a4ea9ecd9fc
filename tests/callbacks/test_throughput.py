"""Throughput and isolation of callback delivery: a hanging receiver delays neither other
receivers nor tasks, and a burst of finished tasks is delivered, each callback once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.callbacks.models import CallbackAttempt, CallbackDelivery
from app.core.config import Settings, TierLimits
from app.jobs.worker import Worker
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.support.apps import eventually, running_app, runtime_of, wait_for_terminal
from tests.support.receiver import Answer, Received, Receiver, receiving

TIMEOUT_S = 4.0
# Two receivers on different loopback addresses stand for two unrelated hosts.
HEALTHY_HOST = "127.0.0.1"
HANGING_HOST = "127.0.0.2"
BULK_TIER = TierLimits(
    create_per_minute=100_000, query_per_minute=100_000, max_active_tasks=100_000
)


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    return {
        **settings_env,
        "GENGATE_OUTBOUND_ALLOWLIST": json.dumps(["127.0.0.0/8"]),
        "GENGATE_CALLBACK_TIMEOUT_SECONDS": str(TIMEOUT_S),
    }


@asynccontextmanager
async def _idle_app(settings: Settings, **update: object) -> AsyncIterator[FastAPI]:
    """The app without its own workers (tests run one when the callbacks are due), with a
    tier that lets one key have hundreds of tasks waiting."""
    settings = settings.model_copy(
        update={
            "workers_in_process": False,
            "tiers": {**settings.tiers, "bulk": BULK_TIER},
            **update,
        }
    )
    async with running_app(settings) as (app, _client):
        yield app


@asynccontextmanager
async def _working(runtime: Runtime) -> AsyncIterator[Worker]:
    """A worker (task loop and callback dispatcher) running until the block ends."""
    stop = asyncio.Event()
    worker = Worker(runtime)
    running = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await running


@contextmanager
def _hanging() -> Iterator[tuple[Receiver, threading.Event]]:
    """A receiver that answers once released (at the latest when the block ends): long
    after the callback timeout."""
    release = threading.Event()

    def answer(_request: Received, _before: int) -> Answer:
        release.wait(60)
        return Answer()

    with receiving(answer, host=HANGING_HOST) as receiver:
        try:
            yield receiver, release
        finally:
            release.set()


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def _create(
    client: httpx.AsyncClient, customer: Customer, callback: str | None, prompt: str = "A kite"
) -> str:
    body: dict[str, object] = {"model": "gpt-image-2-text-to-image", "input": {"prompt": prompt}}
    if callback is not None:
        body["callBackUrl"] = callback
    created = await client.post("/api/v1/jobs/createTask", json=body, headers=customer.headers)
    assert created.status_code == 200, created.text
    return str(created.json()["data"]["taskId"])


async def _cancel(client: httpx.AsyncClient, customer: Customer, task_id: str) -> None:
    canceled = await client.post(
        "/api/v1/jobs/cancel", params={"taskId": task_id}, headers=customer.headers
    )
    assert canceled.status_code == 200, canceled.text


async def _finish_all(
    client: httpx.AsyncClient, customer: Customer, urls: list[str], batch: int = 50
) -> None:
    """Create a task per URL, then cancel them all: each cancel queues its callback."""
    ids: list[str] = []
    for start in range(0, len(urls), batch):
        chunk = urls[start : start + batch]
        ids += await asyncio.gather(*(_create(client, customer, url) for url in chunk))
    for start in range(0, len(ids), batch):
        await asyncio.gather(*(_cancel(client, customer, i) for i in ids[start : start + batch]))


async def _count(runtime: Runtime, what: Callable[[], object]) -> int:
    async with runtime.sessions() as session:
        return int(await session.scalar(what()) or 0)  # type: ignore[call-overload]


async def test_a_hanging_host_does_not_delay_callbacks_to_another(settings: Settings) -> None:
    # Far more deliveries to the hanging host than the worker sends at once.
    async with (
        _idle_app(settings, callback_concurrency=4, callback_per_host_concurrency=2) as app,
        _client(app) as client,
    ):
        runtime = runtime_of(app)
        customer = await make_customer(runtime, credits=100_000, tier="bulk")
        with _hanging() as (hanging, release), receiving(host=HEALTHY_HOST) as healthy:
            # The hanging host's callbacks come due first: they are the older ones.
            await _finish_all(client, customer, [f"{hanging.url}/h{i}" for i in range(20)])
            await _finish_all(client, customer, [f"{healthy.url}/ok{i}" for i in range(6)])
            async with _working(runtime):
                started = time.monotonic()

                async def all_healthy_arrived() -> bool:
                    return len(healthy.received) == 6

                await eventually(all_healthy_arrived, within_s=3 * TIMEOUT_S, what="healthy")
                took = time.monotonic() - started
                in_flight = len(hanging.received)
                release.set()  # so the worker stops without waiting for the timeout
    # Well within one timeout: none of them waited for a hanging send to give up.
    assert took < TIMEOUT_S / 2, f"healthy callbacks took {took:.2f}s"
    # The hanging host had its capped share of sends at once, never more.
    assert in_flight == 2


async def test_a_hanging_receiver_holds_no_task_slot(settings: Settings) -> None:
    # The hanging sends stay in flight (no attempt recorded) for as long as the tasks take.
    async with (
        _idle_app(settings, worker_concurrency=1, callback_timeout_seconds=30) as app,
        _client(app) as client,
    ):
        runtime = runtime_of(app)
        customer = await make_customer(runtime, credits=100_000, tier="bulk")
        with _hanging() as (hanging, release):
            await _finish_all(client, customer, [f"{hanging.url}/h{i}" for i in range(3)])
            async with _working(runtime):

                async def sends_in_flight() -> bool:
                    return len(hanging.received) == 3

                await eventually(sends_in_flight, what="callbacks to the hanging receiver")
                # The worker's one task slot is free: new tasks run while those sends hang.
                for prompt in ("A first kite", "A second kite"):
                    task_id = await _create(client, customer, None, prompt)
                    done = await wait_for_terminal(client, customer.headers, task_id, within_s=20)
                    assert done["state"] == "success"
                # Still in flight: none of them has been answered or given up on yet.
                assert await _count(runtime, lambda: select(func.count(CallbackAttempt.id))) == 0  # type: ignore[arg-type]
                release.set()


async def test_two_hundred_tasks_finishing_at_once_call_back_once_each(
    settings: Settings,
) -> None:
    async with _idle_app(settings) as app, _client(app) as client:
        runtime = runtime_of(app)
        customer = await make_customer(runtime, credits=1_000_000, tier="bulk")

        def slow(_request: Received, _before: int) -> Answer:
            return Answer(delay_s=0.2)

        with receiving(slow) as receiver:
            await _finish_all(client, customer, [f"{receiver.url}/t{i}" for i in range(200)])
            async with _working(runtime):

                async def all_delivered() -> bool:
                    delivered = await _count(
                        runtime,
                        lambda: select(func.count()).where(
                            CallbackDelivery.status == "delivered"  # type: ignore[arg-type]
                        ),
                    )
                    return delivered == 200

                await eventually(all_delivered, within_s=60, what="200 callbacks delivered")
            received = list(receiver.received)
        attempts = await _count(runtime, lambda: select(func.count(CallbackAttempt.id)))  # type: ignore[arg-type]
    assert len(received) == 200
    assert len({r.headers["webhook-id"] for r in received}) == 200
    assert len({r.path for r in received}) == 200
    assert attempts == 200


async def test_a_stopping_worker_hands_back_what_it_kept_for_a_busy_host(
    settings: Settings,
) -> None:
    """A worker keeps a round of deliveries for a host at its cap; stopping, it hands them
    back at once (while its own send is still in flight), so the next worker sends them
    without waiting for their leases to end."""
    async with _idle_app(settings, callback_per_host_concurrency=1) as app, _client(app) as client:
        runtime = runtime_of(app)
        customer = await make_customer(runtime, credits=100_000, tier="bulk")
        release = threading.Event()

        def held_first(_request: Received, before: int) -> Answer:
            if before == 0:
                release.wait(60)
            return Answer()

        def leased(count: int) -> Callable[[], Awaitable[bool]]:
            async def probe() -> bool:
                found = await _count(
                    runtime,
                    lambda: select(func.count()).where(
                        CallbackDelivery.lease_owner.is_not(None)  # type: ignore[union-attr]
                    ),
                )
                return found == count and len(receiver.received) == 1

            return probe

        with receiving(held_first) as receiver:
            await _finish_all(client, customer, [f"{receiver.url}/hook" for _ in range(3)])
            stop = asyncio.Event()
            running = asyncio.create_task(Worker(runtime).run(stop))
            try:
                # One in flight, one kept for the host's next free slot.
                await eventually(leased(2), what="a send in flight and one kept")
                stop.set()
                await eventually(leased(1), within_s=TIMEOUT_S / 2, what="the kept one back")
            finally:
                release.set()
                stop.set()
                await running
            async with _working(runtime):

                async def all_delivered() -> bool:
                    delivered = await _count(
                        runtime,
                        lambda: select(func.count()).where(
                            CallbackDelivery.status == "delivered"  # type: ignore[arg-type]
                        ),
                    )
                    return delivered == 3

                await eventually(all_delivered, within_s=TIMEOUT_S, what="the rest delivered")
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 3
