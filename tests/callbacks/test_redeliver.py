"""Redelivery sends a finished task's callback again as a new message (a new webhook-id);
it is refused while one is pending, for a task without a callback, and for other keys."""

from __future__ import annotations

import asyncio

import httpx

from app.runtime import Runtime
from tests.callbacks.helpers import (
    callbacks,
    create_task,
    record,
    settled_delivery,
    verify,
    webhook_secret,
)
from tests.conftest import Customer, make_customer
from tests.support.apps import eventually, wait_for_terminal
from tests.support.receiver import Answer, Received, receiving

REDELIVER = "/api/v1/jobs/callbacks/redeliver"


async def _redeliver(client: httpx.AsyncClient, customer: Customer, task_id: str) -> httpx.Response:
    return await client.post(REDELIVER, params={"taskId": task_id}, headers=customer.headers)


async def test_a_delivered_callback_is_sent_again_with_a_new_webhook_id(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    with receiving() as receiver:
        task_id = await create_task(client, customer, receiver.url + "/hook")
        first = await settled_delivery(client, customer, task_id)
        response = await _redeliver(client, customer, task_id)
        assert response.status_code == 200, response.text
        listed = response.json()["data"]["deliveries"]
        assert [d["id"] for d in listed][1:] == [first["id"]]
        assert listed[0]["state"] == "pending" and listed[0]["id"] != first["id"]
        second = await settled_delivery(client, customer, task_id)
        secret = await webhook_secret(client, customer)
        requests = receiver.on("/hook")
    assert second["id"] == listed[0]["id"] and second["state"] == "delivered"
    assert [r.headers["webhook-id"] for r in requests] == [first["id"], second["id"]]
    old, new = (verify(secret, r) for r in requests)
    assert old["data"]["taskId"] == new["data"]["taskId"] == task_id
    assert (await callbacks(client, customer, task_id))["callbackState"] == "delivered"


async def test_a_failed_callback_is_redelivered_once_the_receiver_is_back(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    down_for = len(runtime.settings.callback_retry_schedule) + 1

    def answer(_request: Received, before: int) -> Answer:
        return Answer(503) if before < down_for else Answer(200)

    with receiving(answer) as receiver:
        task_id = await create_task(client, customer, receiver.url + "/hook")
        failed = await settled_delivery(client, customer, task_id)
        assert failed["state"] == "failed"
        assert (await record(client, customer, task_id))["callbackState"] == "failed"
        assert (await _redeliver(client, customer, task_id)).status_code == 200
        assert (await record(client, customer, task_id))["callbackState"] in (
            "pending",
            "delivered",
        )
        delivered = await settled_delivery(client, customer, task_id)
        requests = receiver.on("/hook")
    assert delivered["state"] == "delivered" and delivered["id"] != failed["id"]
    assert [a["statusCode"] for a in delivered["attempts"]] == [200]
    assert requests[-1].headers["webhook-id"] == delivered["id"]
    assert (await record(client, customer, task_id))["callbackState"] == "delivered"


async def test_no_redelivery_while_a_delivery_is_pending(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    # The receiver holds the first attempt past the timeout: the delivery stays pending.
    with receiving(lambda _r, _n: Answer(200, delay_s=5.0)) as receiver:
        task_id = await create_task(client, customer, receiver.url + "/hook")

        async def being_sent() -> bool:
            return bool(receiver.on("/hook"))

        await eventually(being_sent, what="the first attempt")
        response = await _redeliver(client, customer, task_id)
        assert response.status_code == 409, response.text
        assert response.json()["data"]["field"] == "taskId"
        assert "pending" in response.json()["msg"]
        listed = await callbacks(client, customer, task_id)
    assert len(listed["deliveries"]) == 1 and listed["callbackState"] == "pending"


async def test_a_task_without_a_callback_cannot_be_redelivered(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    task_id = await create_task(client, customer, None)
    await wait_for_terminal(client, customer.headers, task_id)
    response = await _redeliver(client, customer, task_id)
    assert response.status_code == 409, response.text
    assert "callBackUrl" in response.json()["msg"]
    assert (await callbacks(client, customer, task_id))["deliveries"] == []


async def test_another_keys_task_is_not_found(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    with receiving() as receiver:
        task_id = await create_task(client, customer, receiver.url + "/hook")
        await settled_delivery(client, customer, task_id)
        stranger = await make_customer(runtime)
        for path in (REDELIVER, "/api/v1/jobs/callbacks"):
            method = "POST" if path == REDELIVER else "GET"
            response = await client.request(
                method, path, params={"taskId": task_id}, headers=stranger.headers
            )
            assert response.status_code == 404, response.text
            assert task_id not in response.text
        assert len((await callbacks(client, customer, task_id))["deliveries"]) == 1
    assert len(receiver.received) == 1


async def test_concurrent_redeliveries_make_one_delivery(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    # The receiver holds every attempt, so nothing settles while the requests race.
    with receiving(lambda _r, before: Answer(200, delay_s=0 if before == 0 else 3.0)) as receiver:
        task_id = await create_task(client, customer, receiver.url + "/hook")
        await settled_delivery(client, customer, task_id)
        answers = await asyncio.gather(*(_redeliver(client, customer, task_id) for _ in range(6)))
        listed = await callbacks(client, customer, task_id)
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 5, [a.text for a in answers]
    assert len(listed["deliveries"]) == 2
