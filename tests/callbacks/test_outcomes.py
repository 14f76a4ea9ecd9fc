"""Every way a task can finish (success, provider failure, expiry, cancel) calls back exactly
once, verified, with recordInfo's data; a task without a callback, or one still waiting,
gets no delivery at all."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import update

from app.core.config import Settings
from app.core.ids import now_ms
from app.jobs.models import Task
from tests.callbacks.helpers import (
    app_with,
    callbacks,
    create_task,
    record,
    settled_delivery,
    verify,
    webhook_secret,
)
from tests.support.apps import eventually, wait_for_terminal, worker_running
from tests.support.receiver import receiving

# recordInfo's URLs and the callback's are signed separately (and for longer in a callback):
# they agree on everything but the query string.
_SIGNED = "resultJson"


def _unsigned(result_json: str | None) -> list[str] | None:
    if result_json is None:
        return None
    urls = json.loads(result_json)["resultUrls"]
    return [urlsplit(u)._replace(query="").geturl() for u in urls]


def _assert_same_data(sent: dict[str, Any], read: dict[str, Any]) -> None:
    assert set(sent) == set(read), set(sent) ^ set(read)
    for name in sent:
        if name == "callbackState":
            continue
        if name == _SIGNED:
            assert _unsigned(sent[name]) == _unsigned(read[name]), name
            continue
        assert sent[name] == read[name], (name, sent[name], read[name])


async def test_each_outcome_calls_back_once_with_recordinfos_data(settings: Settings) -> None:
    with receiving() as receiver:
        # No worker until every task is in place, so the expiry and the cancel happen to
        # queued tasks, as they would to tasks no worker got to in time.
        async with app_with(settings, workers_in_process=False, public_url="http://testserver") as (
            client,
            runtime,
            customer,
        ):
            ids = {
                "/success": await create_task(
                    client, customer, receiver.url + "/success", "Un vélo rouge 🚲"
                ),
                "/failure": await create_task(
                    client, customer, receiver.url + "/failure", "x [[fail:provider_error]]"
                ),
                "/expiry": await create_task(client, customer, receiver.url + "/expiry"),
                "/cancel": await create_task(client, customer, receiver.url + "/cancel"),
            }
            silent = await create_task(client, customer, None)
            async with runtime.sessions() as session:
                overdue = update(Task).where(Task.id == ids["/expiry"])  # type: ignore[arg-type]
                await session.execute(overdue.values(deadline_at=now_ms() - 1))
                await session.commit()
            canceled = await client.post(
                "/api/v1/jobs/cancel", params={"taskId": ids["/cancel"]}, headers=customer.headers
            )
            assert canceled.status_code == 200, canceled.text
            # A task that has not finished has no delivery, whatever else is going on.
            assert (await callbacks(client, customer, ids["/success"]))["deliveries"] == []

            async with worker_running(runtime):
                for task_id in [*ids.values(), silent]:
                    await wait_for_terminal(client, customer.headers, task_id)
                deliveries = {
                    p: await settled_delivery(client, customer, t) for p, t in ids.items()
                }
                secret = await webhook_secret(client, customer)

                async def all_arrived() -> bool:
                    return all(receiver.on(path) for path in ids)

                await eventually(all_arrived, what="every callback")
                finals = {p: await record(client, customer, t) for p, t in ids.items()}
                (request,) = receiver.on("/success")
                (sent_url,) = json.loads(verify(secret, request)["data"]["resultJson"])[
                    "resultUrls"
                ]
                download = await client.get(sent_url)
                silent_record = await record(client, customer, silent)
                silent_callbacks = await callbacks(client, customer, silent)

    expected = {
        "/success": ("success", None),
        "/failure": ("fail", "provider_error"),
        "/expiry": ("fail", "expired"),
        "/cancel": ("fail", "canceled"),
    }
    for path, task_id in ids.items():
        (request,) = receiver.on(path)
        assert request.headers["content-type"] == "application/json"
        message = verify(secret, request)
        assert set(message) == {"code", "msg", "data"}
        data, final = message["data"], finals[path]
        assert (data["taskId"], data["state"], data["failCode"]) == (task_id, *expected[path])
        if data["state"] == "success":
            assert (message["code"], message["msg"]) == (200, "success")
            assert _unsigned(data["resultJson"])
        else:
            assert (message["code"], message["msg"]) == (501, data["failMsg"])
            assert data["failMsg"]
        assert data["callbackState"] == "pending"  # it was being sent
        _assert_same_data(data, final)
        assert final["callbackState"] == "delivered"
        delivery = deliveries[path]
        assert delivery["id"] == request.headers["webhook-id"]
        assert [a["statusCode"] for a in delivery["attempts"]] == [200]
    assert len(receiver.received) == len(ids)
    # The callback's result URL works, and for at least a day (retries span three).
    assert download.status_code == 200 and download.content
    (expires_at_s,) = parse_qs(urlsplit(sent_url).query)["exp"]
    assert int(expires_at_s) >= now_ms() // 1000 + 24 * 3600
    assert silent_record["callbackState"] == "none"
    assert silent_callbacks == {"taskId": silent, "callbackState": "none", "deliveries": []}


async def test_a_waiting_task_has_no_delivery(settings: Settings) -> None:
    with receiving() as receiver:
        async with app_with(settings, workers_in_process=False) as (client, _runtime, customer):
            task_id = await create_task(client, customer, receiver.url + "/hook")
            assert (await callbacks(client, customer, task_id))["deliveries"] == []
            assert (await record(client, customer, task_id))["callbackState"] == "pending"
            early = await client.post(
                "/api/v1/jobs/callbacks/redeliver",
                params={"taskId": task_id},
                headers=customer.headers,
            )
            assert early.status_code == 409, early.text
            assert early.json()["data"]["field"] == "taskId"
            assert (await callbacks(client, customer, task_id))["deliveries"] == []
    assert receiver.received == []


async def test_a_task_canceled_while_generating_calls_back_once(settings: Settings) -> None:
    with receiving() as receiver:
        async with app_with(settings, workers_in_process=False) as (client, runtime, customer):
            task_id = await create_task(
                client, customer, receiver.url + "/hook", "slow [[delay:1500]]"
            )
            async with worker_running(runtime):

                async def generating() -> bool:
                    return (await record(client, customer, task_id))["stage"] == "generating"

                await eventually(generating, what="the task to start")
                canceled = await client.post(
                    "/api/v1/jobs/cancel", params={"taskId": task_id}, headers=customer.headers
                )
                assert canceled.status_code == 200, canceled.text
                delivery = await settled_delivery(client, customer, task_id)
            # The worker has stopped: whatever it was doing with the task is over.
            listed = await callbacks(client, customer, task_id)
            secret = await webhook_secret(client, customer)
    assert [d["id"] for d in listed["deliveries"]] == [delivery["id"]]
    (request,) = receiver.on("/hook")
    data = verify(secret, request)["data"]
    assert (data["state"], data["failCode"]) == ("fail", "canceled")
