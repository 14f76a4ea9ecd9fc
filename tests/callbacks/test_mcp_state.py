"""Agents see a task's callback state in get_generation_status, as REST clients do in
recordInfo."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.callbacks.helpers import create_task, record, settled_delivery
from tests.conftest import Customer
from tests.support.apps import wait_for_terminal
from tests.support.receiver import Answer, receiving


async def _status(client: httpx.AsyncClient, customer: Customer, task_id: str) -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "get_generation_status", "arguments": {"taskId": task_id}},
    }
    response = await client.post(
        "/api/mcp",
        content=json.dumps(body).encode(),
        headers={**customer.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    assert result["isError"] is False, result
    content: dict[str, Any] = result["structuredContent"]
    return content


async def test_get_generation_status_carries_callback_state(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    with receiving() as good, receiving(lambda _r, _n: Answer(410)) as gone:
        delivered = await create_task(client, customer, good.url + "/hook")
        failed = await create_task(client, customer, gone.url + "/hook")
        silent = await create_task(client, customer, None)
        for task_id in (delivered, failed):
            await settled_delivery(client, customer, task_id)
        await wait_for_terminal(client, customer.headers, silent)
        states = {t: (await _status(client, customer, t)) for t in (delivered, failed, silent)}
    expected = {delivered: "delivered", failed: "failed", silent: "none"}
    for task_id, state in expected.items():
        assert states[task_id]["taskId"] == task_id
        assert states[task_id]["callbackState"] == state, states[task_id]
        assert (await record(client, customer, task_id))["callbackState"] == state
