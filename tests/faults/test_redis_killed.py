"""A real redis-server killed (SIGKILL) under load and started again: every call keeps
answering (200, or 429 where a small tier's limit is really exceeded, never 5xx), the
limiter warns once and counts per process meanwhile, and once Redis is back it counts in
Redis again (its keys reappear there) without the app being restarted."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from app.core.config import Settings
from tests.conftest import Customer, make_customer
from tests.faults.conftest import CREATE, Records, runtime_of
from tests.faults.redis_support import RedisServer, limit_keys, logged
from tests.faults.test_redis_outage import RESUMED, WARNING
from tests.support.apps import eventually, running_app

CLIENTS = 4
# Generous enough that the load never meets them; "tiny" is the one whose limit is tested.
TIERS = {
    "standard": {"create_per_minute": 60, "query_per_minute": 600, "max_active_tasks": 10},
    "bulk": {
        "create_per_minute": 100_000,
        "query_per_minute": 100_000,
        "max_active_tasks": 1_000_000,
    },
    "tiny": {"create_per_minute": 3, "query_per_minute": 1000, "max_active_tasks": 1000},
}


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def served(
    settings_env: dict[str, str], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    env = {
        **settings_env,
        "GENGATE_REDIS_URL": redis_server.url,
        "GENGATE_TIERS": json.dumps(TIERS),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    async with running_app(Settings(_env_file=None)) as running:
        yield running


class Load:
    """CLIENTS loops, each a createTask then a recordInfo of what it created, until stopped;
    every status answered is kept."""

    def __init__(self, client: httpx.AsyncClient, customer: Customer) -> None:
        self.client = client
        self.customer = customer
        self.statuses: Counter[int] = Counter()
        self.answers = 0
        self._stop = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._loops = [asyncio.create_task(self._loop()) for _ in range(CLIENTS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._loops)

    async def answered_more(self, than: int) -> bool:
        for loop in self._loops:
            if loop.done():
                loop.result()  # a client that failed fails the wait at once
        return self.answers > than

    async def _loop(self) -> None:
        headers = self.customer.headers
        while not self._stop.is_set():
            created = await self.client.post(
                "/api/v1/jobs/createTask", json=CREATE, headers=headers
            )
            self._count(created)
            if created.status_code != 200:
                continue
            params = {"taskId": created.json()["data"]["taskId"]}
            self._count(
                await self.client.get("/api/v1/jobs/recordInfo", params=params, headers=headers)
            )

    def _count(self, response: httpx.Response) -> None:
        self.statuses[response.status_code] += 1
        self.answers += 1


@contextlib.contextmanager
def logs() -> Iterator[tuple[Records, Records]]:
    with logged("gengate.limits") as limits_log, logged("gengate.notify") as notify_log:
        yield limits_log, notify_log


async def counted_in(redis_url: str, prefix: str) -> bool:
    """Whether the rate limiter's counters are in that Redis."""
    async with Redis.from_url(redis_url) as redis:
        return bool(await limit_keys(redis, prefix))


async def test_redis_killed_under_load_and_started_again(
    served: tuple[FastAPI, httpx.AsyncClient], redis_server: RedisServer
) -> None:
    app, client = served
    runtime = runtime_of(app)
    prefix = runtime.settings.redis_prefix
    bulk = await make_customer(runtime, tier="bulk", credits=10_000_000)
    tiny = await make_customer(runtime, tier="tiny", credits=10_000)
    load = Load(client, bulk)

    with logs() as (limits_log, notify_log):
        load.start()
        try:
            await eventually(lambda: load.answered_more(20), what="load before the kill")
            assert await counted_in(redis_server.url, prefix), "the limiter counts in Redis"

            redis_server.kill()
            killed_at = load.answers
            await eventually(lambda: load.answered_more(killed_at + 40), what="load without Redis")
            assert [m for m in limits_log.messages if WARNING in m] == limits_log.messages
            assert len(limits_log.messages) == 1, limits_log.messages

            # Counted in this process meanwhile, the small tier's limit still holds.
            statuses = [
                (await client.post("/api/v1/jobs/createTask", json=CREATE, headers=tiny.headers))
                for _ in range(4)
            ]
            assert [r.status_code for r in statuses] == [200, 200, 200, 429], statuses[-1].text
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["redis"] in ("unavailable", "timeout")

            await redis_server.start()  # the same port, and empty, as after a crash
            await eventually(
                lambda: counted_in(redis_server.url, prefix),
                within_s=20,
                what="rate-limit counters to reappear in the restarted Redis",
            )
            assert limits_log.messages[1:] == [RESUMED]
            back_at = load.answers
            await eventually(lambda: load.answered_more(back_at + 20), what="load with Redis")
        finally:
            await load.stop()

    assert set(load.statuses) == {200}, load.statuses
    # Wake-ups lost while Redis was away cost one warning, not one per signal.
    assert len(notify_log.messages) == 2, notify_log.messages
    assert notify_log.messages[0].startswith("wake-up channel interrupted")
    assert notify_log.messages[1] == "wake-up channel back"
