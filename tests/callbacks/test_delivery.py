"""A finished task's callback arrives once, signed per Standard Webhooks, with recordInfo's
data as its body."""

from __future__ import annotations

import json
from typing import Any

import httpx
from standardwebhooks import Webhook

from tests.conftest import Customer
from tests.support.apps import eventually, record_info, wait_for_terminal
from tests.support.receiver import Receiver, receiving


async def _create(
    client: httpx.AsyncClient, customer: Customer, url: str, prompt: str = "A red bicycle"
) -> str:
    body = {
        "model": "gpt-image-2-text-to-image",
        "input": {"prompt": prompt},
        "callBackUrl": url,
    }
    response = await client.post("/api/v1/jobs/createTask", json=body, headers=customer.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["taskId"])


async def _secret(client: httpx.AsyncClient, customer: Customer) -> str:
    response = await client.get("/api/v1/account/webhook-secret", headers=customer.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["secret"])


def _verified(receiver: Receiver, path: str, secret: str) -> list[dict[str, Any]]:
    webhook = Webhook(secret)
    return [webhook.verify(r.body.decode(), r.headers) for r in receiver.on(path)]


async def test_success_and_failure_each_call_back_once_verified(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    with receiving() as receiver:
        ok_id = await _create(client, customer, receiver.url + "/ok")
        failed_id = await _create(
            client, customer, receiver.url + "/failed", "x [[fail:provider_error]]"
        )
        for task_id in (ok_id, failed_id):
            await wait_for_terminal(client, customer.headers, task_id)

        async def both_delivered() -> bool:
            # The receiver holds a request before its answer reaches the sender, and the
            # sender records the delivery only after that answer: wait for the record too.
            record = await record_info(client, customer.headers, ok_id)
            recorded = record["callbackState"] == "delivered"
            return recorded and bool(receiver.on("/ok")) and bool(receiver.on("/failed"))

        await eventually(both_delivered, what="both callbacks, and the delivery recorded")
        secret = await _secret(client, customer)
        (ok,) = _verified(receiver, "/ok", secret)
        (failed,) = _verified(receiver, "/failed", secret)
    assert ok["code"] == 200 and ok["msg"] == "success"
    assert ok["data"]["taskId"] == ok_id and ok["data"]["state"] == "success"
    assert json.loads(ok["data"]["resultJson"])["resultUrls"]
    assert failed["code"] == 501 and failed["data"]["failCode"] == "provider_error"
    assert failed["msg"] == failed["data"]["failMsg"]
    listed = await client.get(
        "/api/v1/jobs/callbacks", params={"taskId": ok_id}, headers=customer.headers
    )
    (delivery,) = listed.json()["data"]["deliveries"]
    assert (
        delivery["state"] == "delivered"
        and delivery["id"] == receiver.on("/ok")[0].headers["webhook-id"]
    )
    assert [a["statusCode"] for a in delivery["attempts"]] == [200]
