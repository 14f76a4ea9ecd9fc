"""With Redis cut, the calls that count against a rate limit answer 503, not 500; after the
restore they answer 200 again. (Serving through a Redis outage is not promised.)"""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.conftest import make_customer
from tests.faults.conftest import CREATE, UNAVAILABLE, assert_unavailable, mcp_call, runtime_of
from tests.support.apps import eventually
from tests.support.faultproxy import FaultProxy


async def test_calls_answer_503_while_redis_is_cut(
    redis_faulty: tuple[FastAPI, httpx.AsyncClient], redis_proxy: FaultProxy
) -> None:
    app, client = redis_faulty
    customer = await make_customer(runtime_of(app))
    created = await client.post("/api/v1/jobs/createTask", json=CREATE, headers=customer.headers)
    assert created.status_code == 200, created.text
    task_id = created.json()["data"]["taskId"]
    assert redis_proxy.connections > 0, "the app must reach Redis through the proxy"

    await redis_proxy.cut()
    record_info = {"taskId": task_id}
    assert_unavailable(
        await client.post("/api/v1/jobs/createTask", json=CREATE, headers=customer.headers)
    )
    assert_unavailable(
        await client.get("/api/v1/jobs/recordInfo", params=record_info, headers=customer.headers)
    )
    result = (await mcp_call(client, customer, "get_generation_status", record_info)).json()
    assert result["result"]["isError"] is True
    assert result["result"]["structuredContent"] == UNAVAILABLE
    readyz = await client.get("/readyz")
    assert readyz.status_code == 503
    assert readyz.json()["checks"]["redis"] != "ok"

    await redis_proxy.restore()

    async def answers() -> bool:
        response = await client.get(
            "/api/v1/jobs/recordInfo", params=record_info, headers=customer.headers
        )
        return response.status_code == 200

    await eventually(answers, within_s=15, what="recordInfo to answer 200 after the restore")
    again = await client.post("/api/v1/jobs/createTask", json=CREATE, headers=customer.headers)
    assert again.status_code == 200, again.text
    assert (await client.get("/readyz")).status_code == 200
