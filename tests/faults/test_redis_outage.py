"""With Redis cut or hanging, the API keeps serving: rate limits count per process (one
warning), /readyz stays 200 and says Redis is away, and once Redis answers again the limits
are shared again (one info line) without a restart. Revocations announced while Redis was
away reach the cache once it is back (the notifier's resync drops every cached key)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from app.keys.service import find_key, hash_key, revoke_api_key
from app.runtime import Runtime
from tests.conftest import make_customer
from tests.faults.conftest import CREATE, REDIS_URL, Records, mcp_call, runtime_of
from tests.faults.redis_support import limit_keys, logged
from tests.support.apps import eventually
from tests.support.faultproxy import FaultProxy

WARNING = "rate limits are counted per process until Redis is back"
RESUMED = "Redis is back: rate limits are shared between processes again"


@pytest.fixture
def limits_log() -> Iterator[Records]:
    with logged("gengate.limits") as records:
        yield records


async def test_calls_keep_answering_while_redis_is_cut(
    redis_faulty: tuple[FastAPI, httpx.AsyncClient], redis_proxy: FaultProxy, limits_log: Records
) -> None:
    app, client = redis_faulty
    customer = await make_customer(runtime_of(app))
    created = await client.post("/api/v1/jobs/createTask", json=CREATE, headers=customer.headers)
    assert created.status_code == 200, created.text
    task_id = created.json()["data"]["taskId"]
    assert redis_proxy.connections > 0, "the app must reach Redis through the proxy"
    record_info = {"taskId": task_id}

    await redis_proxy.cut()
    for _ in range(3):
        again = await client.post("/api/v1/jobs/createTask", json=CREATE, headers=customer.headers)
        assert again.status_code == 200, again.text
        info = await client.get(
            "/api/v1/jobs/recordInfo", params=record_info, headers=customer.headers
        )
        assert info.status_code == 200, info.text
    result = (await mcp_call(client, customer, "get_generation_status", record_info)).json()
    assert result["result"]["isError"] is False, result
    readyz = await client.get("/readyz")
    assert readyz.status_code == 200, readyz.text
    assert readyz.json()["status"] == "degraded"
    assert readyz.json()["checks"]["database"] == "ok"
    assert readyz.json()["checks"]["redis"] in ("unavailable", "timeout")
    assert [m for m in limits_log.messages if WARNING in m] == limits_log.messages
    assert len(limits_log.messages) == 1, limits_log.messages

    # What the limiter counted before the cut goes, so that its keys reappearing in
    # Redis show it counting there again.
    prefix = runtime_of(app).settings.redis_prefix
    async with Redis.from_url(REDIS_URL) as redis:
        assert await redis.delete(*await limit_keys(redis, prefix))
        await redis_proxy.restore()

        async def shared_again() -> bool:
            response = await client.get(
                "/api/v1/jobs/recordInfo", params=record_info, headers=customer.headers
            )
            assert response.status_code == 200, response.text
            return bool(await limit_keys(redis, prefix))

        await eventually(shared_again, within_s=15, what="the limiter to count in Redis")
    assert limits_log.messages == [limits_log.messages[0], RESUMED]
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")


async def test_a_hanging_redis_delays_only_the_calls_that_found_it_hanging(
    redis_faulty: tuple[FastAPI, httpx.AsyncClient], redis_proxy: FaultProxy, limits_log: Records
) -> None:
    app, client = redis_faulty
    customer = await make_customer(runtime_of(app))
    created = await client.post("/api/v1/jobs/createTask", json=CREATE, headers=customer.headers)
    assert created.status_code == 200, created.text
    record_info = {"taskId": created.json()["data"]["taskId"]}

    await redis_proxy.stall()
    # The first call waits out the Redis timeout (2 s) and is answered from the process's
    # counters; the circuit is open after it, so the next ones do not wait on Redis at all.
    first = await client.get(
        "/api/v1/jobs/recordInfo", params=record_info, headers=customer.headers
    )
    assert first.status_code == 200, first.text
    for _ in range(5):
        started = time.monotonic()
        response = await client.get(
            "/api/v1/jobs/recordInfo", params=record_info, headers=customer.headers
        )
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 1.0, "a call waited on the hanging Redis"

    await redis_proxy.restore()
    await eventually(
        lambda: _answers_and_resumed(client, customer.headers, record_info, limits_log),
        within_s=15,
        what="the limiter to use Redis again after the stall",
    )


async def _answers_and_resumed(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    record_info: dict[str, str],
    limits_log: Records,
) -> bool:
    response = await client.get("/api/v1/jobs/recordInfo", params=record_info, headers=headers)
    assert response.status_code == 200, response.text
    return RESUMED in limits_log.messages


@pytest.fixture
def notify_log() -> Iterator[Records]:
    with logged("gengate.notify") as records:
        yield records


async def test_a_revocation_made_while_redis_was_away_is_applied_once_it_is_back(
    redis_faulty: tuple[FastAPI, httpx.AsyncClient], redis_proxy: FaultProxy, notify_log: Records
) -> None:
    app, client = redis_faulty
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    assert (await client.get("/api/v1/account", headers=customer.headers)).status_code == 200

    await redis_proxy.cut()
    await _revoke_elsewhere(runtime, customer.key)
    await redis_proxy.restore()

    # With Redis the key cache trusts an entry for 60 s; the resync after the outage is
    # what makes this process read the key again, well within that.
    assert runtime.settings.resolved_key_cache_seconds >= 60

    async def refused() -> bool:
        response = await client.get("/api/v1/account", headers=customer.headers)
        assert response.status_code in (200, 401), response.text
        return response.status_code == 401

    await eventually(refused, within_s=15, what="the revoked key to be refused")
    # Nothing was published (no task was created): listening again is what says it is back.
    await eventually(
        lambda: _logged(notify_log, "wake-up channel back"), what="the channel to be back"
    )
    assert len(notify_log.messages) == 2, notify_log.messages
    assert notify_log.messages[0].startswith("wake-up channel interrupted")


async def _logged(records: Records, message: str) -> bool:
    return message in records.messages


async def _revoke_elsewhere(runtime: Runtime, token: str) -> None:
    """Revoke the key as another process would, whose announcement this one cannot hear
    (a session without the app's listeners announces nothing)."""
    async with AsyncSession(runtime.engine) as session:
        key = await find_key(session, hash_key(token))
        assert key is not None
        await revoke_api_key(session, key_id=key.id)
        await session.commit()
