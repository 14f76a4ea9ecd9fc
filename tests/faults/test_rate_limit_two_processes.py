"""Rate limit across 2 API processes on one Redis: admitted <= limit.

`gengate serve --workers 2` runs two API processes that count a key's calls in the one
Redis they share, so a burst spread over both is admitted up to the tier's limit once, not
once per process. The processes reach PostgreSQL and Redis directly: the subject is the
shared counter, not an outage.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from app.core.config import Settings
from app.jobs.models import Task
from app.runtime import Runtime
from bench.servers import socket_owner
from tests.conftest import Customer, make_customer
from tests.faults.conftest import CREATE, REDIS_URL
from tests.support.apps import eventually, running_app, runtime_of
from tests.support.backends import fresh_database
from tests.support.server import LiveServer, start_server, wait_until

pytestmark = pytest.mark.timeout(120)

LIMIT = 20
CALLS = 60
CONNECTIONS_AT_ONCE = 12
REQUEST_TIMEOUT_S = 15.0
TIGHT_TIER = {"create_per_minute": LIMIT, "query_per_minute": 1000, "max_active_tasks": 1000}
STARTED = re.compile(r"Started server process \[(\d+)\]")


@pytest.fixture
def database_url(postgres_template: str, tmp_path: Path) -> str:
    """The fault tests' PostgreSQL database, reached directly (two processes need it)."""
    return fresh_database(postgres_template, tmp_path)


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    """A tier with a small create limit, Redis on both runs, counters under a fresh prefix,
    and no embedded workers: created tasks stay in the database to be counted."""
    tiers = {**Settings(_env_file=None).tiers}  # type: ignore[call-arg]
    tiers_json = {name: limits.model_dump() for name, limits in tiers.items()}
    return settings_env | {
        "GENGATE_TIERS": json.dumps(tiers_json | {"tight": TIGHT_TIER}),
        "GENGATE_REDIS_URL": REDIS_URL,
        "GENGATE_REDIS_PREFIX": "gengate-test-2p-" + uuid.uuid4().hex[:12],
        "GENGATE_WORKERS_IN_PROCESS": "false",
    }


@pytest.fixture
async def test_runtime(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Runtime]:
    """The test's own view of the database, to make the customer and count its tasks."""
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    async with running_app(Settings(_env_file=None)) as (app, _client):  # type: ignore[call-arg]
        yield runtime_of(app)


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]  # names in lower case
    served_by: int | None  # the API process holding the server end of its connection


def _create_over_a_new_connection(port: int, customer: Customer, pids: list[int]) -> Answer:
    """One createTask on a connection of its own, so the kernel picks the process."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        headers = {**customer.headers, "Content-Type": "application/json"}
        conn.request("POST", "/api/v1/jobs/createTask", body=json.dumps(CREATE), headers=headers)
        response = conn.getresponse()
        body = json.loads(response.read())
        # Still open (keep-alive): the process that answered still holds its end.
        served_by = socket_owner(port, conn.sock.getsockname()[1], pids) if conn.sock else None
        return Answer(
            response.status, body, {k.lower(): v for k, v in response.getheaders()}, served_by
        )
    finally:
        conn.close()


async def _burst(port: int, customer: Customer, pids: list[int]) -> list[Answer]:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(CONNECTIONS_AT_ONCE) as pool:
        calls = [
            loop.run_in_executor(pool, _create_over_a_new_connection, port, customer, pids)
            for _ in range(CALLS)
        ]
        return await asyncio.gather(*calls)


async def _serving_two_processes(server: LiveServer) -> list[int]:
    """Wait until the server answers /readyz and both API processes started; their pids."""

    async def ready() -> list[int] | None:
        assert server.process.poll() is None, f"server exited early:\n{server.log()}"
        pids = sorted({int(pid) for pid in STARTED.findall(server.log())})
        try:
            async with httpx.AsyncClient(timeout=1) as http_client:
                answer = await http_client.get(server.base_url + "/readyz")
        except httpx.HTTPError:
            return None
        return pids if answer.status_code == 200 and len(pids) == 2 else None

    return await eventually(ready, within_s=60, what="two API processes serving /readyz")


def _stop_leftovers(pids: list[int]) -> None:
    """The parent stops its API processes; one still running after 10 s is killed."""
    try:
        wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=10, what="children exit")
    except AssertionError:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        raise


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _assert_rate_limited(answer: Answer) -> None:
    """The documented 429: `rate limit exceeded` with Retry-After, RateLimit-* and data."""
    assert answer.status == 429, answer
    assert answer.body["code"] == 429 and answer.body["msg"] == "rate limit exceeded", answer
    data = answer.body["data"]
    assert data["error"] == "rate limit exceeded"
    assert (data["limit"], data["tier"], data["windowSeconds"]) == (LIMIT, "tight", 60)
    assert 1 <= data["retryAfter"] <= 60
    assert answer.headers["retry-after"] == str(data["retryAfter"])
    assert answer.headers["ratelimit-limit"] == str(LIMIT)
    assert answer.headers["ratelimit-remaining"] == "0"


async def test_two_api_processes_admit_a_keys_creates_up_to_its_limit_once(
    test_runtime: Runtime, settings_env: dict[str, str], tmp_path: Path
) -> None:
    customer = await make_customer(test_runtime, credits=1_000_000, tier="tight")
    server = start_server(settings_env, tmp_path, args=["serve", "--workers", "2"], ready_path=None)
    pids: list[int] = []
    try:
        pids = await _serving_two_processes(server)
        port = int(server.base_url.rsplit(":", 1)[1])
        answers = await _burst(port, customer, pids)
    finally:
        server.stop()
        _stop_leftovers(pids)

    assert {a.served_by for a in answers} >= set(pids), "one process served the whole burst"
    admitted = [a for a in answers if a.status == 200]
    assert len(admitted) <= LIMIT, f"{len(admitted)} creates admitted past a limit of {LIMIT}"
    # All 60 calls came within one window: none under the limit may be refused either.
    assert len(admitted) == LIMIT, f"only {len(admitted)} of {LIMIT} admitted"
    for answer in answers:
        if answer.status != 200:
            _assert_rate_limited(answer)

    async with test_runtime.sessions() as session:
        stored = set(
            await session.scalars(
                select(col(Task.id)).where(col(Task.account_id) == customer.account.id)
            )
        )
    assert stored == {a.body["data"]["taskId"] for a in admitted}
