"""A `gengate worker` killed with SIGKILL loses no callback: a delivery it was sending
comes due when its lease ends and the next worker sends the same bytes under the same
`webhook-id`; a callback queued by a task it had just finished is sent by the next worker."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from app.callbacks.models import CallbackDelivery
from app.jobs.models import Task
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.support.apps import eventually, runtime_of
from tests.support.receiver import Answer, Received, receiving
from tests.support.server import LiveServer, start_server

# The lease on a delivery is 2 x the timeout + 5 s: 7 s here.
TIMEOUT_S = 1
LEASE_S = 2 * TIMEOUT_S + 5


async def _finished_with_callback(
    client: httpx.AsyncClient, customer: Customer, url: str, prompt: str = "A red bicycle"
) -> str:
    """A task created with `url` as its callback and canceled at once: its callback is due."""
    task_id = await _created(client, customer, url, prompt)
    canceled = await client.post(
        "/api/v1/jobs/cancel", params={"taskId": task_id}, headers=customer.headers
    )
    assert canceled.status_code == 200, canceled.text
    return task_id


async def _created(
    client: httpx.AsyncClient, customer: Customer, url: str, prompt: str = "A red bicycle"
) -> str:
    body = {
        "model": "gpt-image-2-text-to-image",
        "input": {"prompt": prompt},
        "callBackUrl": url,
    }
    created = await client.post("/api/v1/jobs/createTask", json=body, headers=customer.headers)
    assert created.status_code == 200, created.text
    return str(created.json()["data"]["taskId"])


async def _delivery_of(runtime: Runtime, task_id: str) -> CallbackDelivery | None:
    async with runtime.sessions() as session:
        found: CallbackDelivery | None = await session.scalar(
            select(CallbackDelivery).where(CallbackDelivery.task_id == task_id)  # type: ignore[arg-type]
        )
        return found


async def _listed(
    client: httpx.AsyncClient, customer: Customer, task_id: str
) -> list[dict[str, object]]:
    listed = await client.get(
        "/api/v1/jobs/callbacks", params={"taskId": task_id}, headers=customer.headers
    )
    assert listed.status_code == 200, listed.text
    deliveries: list[dict[str, object]] = listed.json()["data"]["deliveries"]
    return deliveries


def _kill(worker: LiveServer) -> None:
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


async def test_worker_killed_mid_delivery_the_next_sends_it_after_the_lease(
    idle_app: tuple[FastAPI, httpx.AsyncClient], settings_env: dict[str, str], tmp_path: Path
) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    env = {**settings_env, "GENGATE_CALLBACK_TIMEOUT_SECONDS": str(TIMEOUT_S)}
    workers: list[LiveServer] = []
    killed = threading.Event()

    def answer(_request: Received, before: int) -> Answer:
        if before == 0:
            # The worker dies while the receiver holds its request, before any answer.
            _kill(workers[0])
            killed.set()
        return Answer()

    with receiving(answer) as receiver:
        task_id = await _finished_with_callback(client, customer, receiver.url + "/hook")
        try:
            workers.append(start_server(env, tmp_path, args=["worker"], ready_path=None))

            async def first_killed() -> bool:
                return killed.is_set()

            await eventually(first_killed, what="the first worker to be killed mid-delivery")
            workers.append(start_server(env, tmp_path, args=["worker"], ready_path=None))

            async def delivered() -> list[dict[str, object]] | None:
                (delivery,) = await _listed(client, customer, task_id)
                return [delivery] if delivery["state"] == "delivered" else None

            (delivery,) = await eventually(
                delivered, within_s=LEASE_S + 30, what="the second worker to deliver"
            )
        finally:
            for worker in workers:
                worker.stop()
        first, second = receiver.on("/hook")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery["id"]
    assert first.body == second.body
    # The second worker left the delivery alone until the dead worker's lease ran out.
    assert second.at - first.at >= LEASE_S - 2
    assert [(a["number"], a["statusCode"]) for a in delivery["attempts"]] == [(1, 200)]  # type: ignore[union-attr]


async def test_worker_killed_after_a_task_finished_loses_no_callback(
    idle_app: tuple[FastAPI, httpx.AsyncClient], settings_env: dict[str, str], tmp_path: Path
) -> None:
    """The callback a worker queued when it finished a task, and had not sent yet, is sent
    by the next worker. The dead worker's only delivery slot is held by a hanging receiver,
    so it provably sent nothing for the task before it was killed."""
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    env = {
        **settings_env,
        "GENGATE_CALLBACK_CONCURRENCY": "1",
        # Long enough that the hanging send still fills the slot when the kill comes.
        "GENGATE_CALLBACK_TIMEOUT_SECONDS": "20",
    }
    release = threading.Event()

    def answer(request: Received, _before: int) -> Answer:
        if request.path == "/hang":
            release.wait(60)
        return Answer()

    workers: list[LiveServer] = []
    with receiving(answer) as receiver:
        try:
            # Due before the task below finishes, so the worker's one slot goes to it.
            await _finished_with_callback(client, customer, receiver.url + "/hang")
            task_id = await _created(client, customer, receiver.url + "/ok")
            workers.append(start_server(env, tmp_path, args=["worker"], ready_path=None))

            async def finished_not_sent() -> CallbackDelivery | None:
                async with runtime.sessions() as session:
                    task = await session.get(Task, task_id)
                    done = task is not None and task.status == "success"
                delivery = await _delivery_of(runtime, task_id)
                return delivery if done and delivery and receiver.on("/hang") else None

            queued = await eventually(
                finished_not_sent, within_s=60, what="the task's success with its outbox row"
            )
            _kill(workers[0])
            assert queued.attempts == 0 and queued.lease_owner is None
            assert receiver.on("/ok") == []
            workers.append(start_server(env, tmp_path, args=["worker"], ready_path=None))

            async def delivered() -> list[dict[str, object]] | None:
                (delivery,) = await _listed(client, customer, task_id)
                return [delivery] if delivery["state"] == "delivered" else None

            (delivery,) = await eventually(delivered, what="the next worker to deliver")
        finally:
            release.set()
            for worker in workers:
                worker.stop()
        (sent,) = receiver.on("/ok")
    assert sent.headers["webhook-id"] == delivery["id"] == queued.id
    assert b'"state":"success"' in sent.body
    assert [(a["number"], a["statusCode"]) for a in delivery["attempts"]] == [(1, 200)]  # type: ignore[union-attr]
