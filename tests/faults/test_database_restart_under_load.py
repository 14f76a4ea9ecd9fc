"""PostgreSQL restarted under a bounded create/read load: six clients loop createTask then
recordInfo while the database goes away for about 3 s and comes back.

Every answer must be 200, 429 or a 503 with Retry-After (never a 500, never a hang), the
service must be back within 5 s of the restore, and afterwards the books must add up:
every create answered 200 is stored with its hold, the balance is the ledger sum, and no
task is left waiting.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col

from app.accounts.models import Account
from app.core.config import Settings
from app.credits.models import LedgerEntry
from app.jobs.models import ACTIVE_STATUSES, Task
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.faults.conftest import UNAVAILABLE, runtime_of
from tests.support.apps import eventually
from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.timeout(150)

CLIENTS = 6
REQUEST_TIMEOUT_S = 15.0
OUTAGE_S = 3.0  # about what a PostgreSQL restart takes
BACK_WITHIN_S = 5.0
ANSWERS_DURING_OUTAGE = 12
CREATES_BEFORE_AND_AFTER = 12
MAX_CREATES_PER_CLIENT = 400  # the load is bounded even if a phase never ends
# Renders long enough that some tasks are mid-render when the database goes.
CREATE = {"model": "gpt-image-2-text-to-image", "input": {"prompt": "A red kite [[delay:300]]"}}
UNLIMITED = 1_000_000
BULK_TIER = {
    "create_per_minute": UNLIMITED,
    "query_per_minute": UNLIMITED,
    "max_active_tasks": UNLIMITED,
}


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    """A tier without limits, so the load meets the outage and not its rate limits."""
    tiers = {**Settings(_env_file=None).tiers}  # type: ignore[call-arg]
    tiers_json = {name: limits.model_dump() for name, limits in tiers.items()}
    return settings_env | {"GENGATE_TIERS": json.dumps(tiers_json | {"bulk": BULK_TIER})}


@dataclass(frozen=True)
class Answer:
    call: str  # "create" or "read"
    sent: float
    answered: float
    status: int | None  # None: no answer within REQUEST_TIMEOUT_S, or the app raised
    problem: str | None  # why the answer is not one a client may get, if it is not
    task_id: str | None = None  # of a create answered 200


def _problem(response: httpx.Response) -> str | None:
    """What is wrong with an answer: only 200, 429 and a proper 503 are acceptable."""
    if response.status_code in (200, 429):
        return None
    if response.status_code == 503:
        if response.headers.get("Retry-After") != "5":
            return f"503 without Retry-After: {response.headers}"
        if response.json().get("data") != UNAVAILABLE:
            return f"503 with an unexpected body: {response.text}"
        return None
    return f"{response.status_code}: {response.text[:300]}"


class Load:
    """Clients looping createTask then recordInfo of their latest task, until stopped."""

    def __init__(self, client: httpx.AsyncClient, customer: Customer) -> None:
        self.client = client
        self.customer = customer
        self.answers: list[Answer] = []
        self.stop = asyncio.Event()

    async def _timed(self, call: str, request: Awaitable[httpx.Response]) -> Answer:
        sent = time.monotonic()
        try:
            response = await asyncio.wait_for(request, REQUEST_TIMEOUT_S)
        except TimeoutError:
            answer = Answer(call, sent, time.monotonic(), None, "no answer within the timeout")
        except Exception as error:  # the app raised: a client would have seen a 500
            answer = Answer(call, sent, time.monotonic(), None, repr(error))
        else:
            task_id = None
            if call == "create" and response.status_code == 200:
                task_id = str(response.json()["data"]["taskId"])
            answer = Answer(
                call, sent, time.monotonic(), response.status_code, _problem(response), task_id
            )
        self.answers.append(answer)
        return answer

    async def _client(self) -> None:
        latest: str | None = None
        headers = self.customer.headers
        for _ in range(MAX_CREATES_PER_CLIENT):
            if self.stop.is_set():
                return
            created = await self._timed(
                "create", self.client.post("/api/v1/jobs/createTask", json=CREATE, headers=headers)
            )
            latest = created.task_id or latest
            if latest is not None:
                params = {"taskId": latest}
                await self._timed(
                    "read",
                    self.client.get("/api/v1/jobs/recordInfo", params=params, headers=headers),
                )
            if created.status != 200:
                await asyncio.sleep(0.05)  # a client's pause before trying again

    def run(self) -> asyncio.Future[list[None]]:
        return asyncio.gather(*(self._client() for _ in range(CLIENTS)))

    def created_since(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.task_id is not None and a.sent >= moment]

    def answered_since(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.sent >= moment]


async def _account_books(
    runtime: Runtime, account_id: str
) -> tuple[list[Task], list[LedgerEntry], int]:
    async with runtime.sessions() as session:
        tasks = await session.scalars(select(Task).where(col(Task.account_id) == account_id))
        entries = await session.scalars(
            select(LedgerEntry).where(col(LedgerEntry.account_id) == account_id)
        )
        balance = await session.scalar(
            select(col(Account.balance)).where(col(Account.id) == account_id)
        )
        return list(tasks), list(entries), int(balance or 0)


async def test_a_database_restart_under_load_costs_only_503s_and_loses_nothing(
    faulty: tuple[FastAPI, httpx.AsyncClient], db_proxy: FaultProxy
) -> None:
    app, client = faulty
    runtime = runtime_of(app)
    customer = await make_customer(runtime, credits=UNLIMITED, tier="bulk")
    load = Load(client, customer)
    running = load.run()
    try:
        await eventually(
            lambda: _async(len(load.created_since(0)) >= CREATES_BEFORE_AND_AFTER),
            within_s=30,
            what="the load to create tasks before the outage",
        )

        await db_proxy.cut()
        cut_at = time.monotonic()
        await eventually(
            lambda: _async(
                time.monotonic() - cut_at >= OUTAGE_S
                and len(load.answered_since(cut_at)) >= ANSWERS_DURING_OUTAGE
            ),
            within_s=OUTAGE_S + REQUEST_TIMEOUT_S,
            what="the load to be answered during the outage",
        )
        during = load.answered_since(cut_at)
        await db_proxy.restore()
        restored_at = time.monotonic()

        await eventually(
            lambda: _async(len(load.created_since(restored_at)) >= CREATES_BEFORE_AND_AFTER),
            within_s=BACK_WITHIN_S + REQUEST_TIMEOUT_S,
            what="the load to create tasks again after the restore",
        )
    finally:
        load.stop.set()
        await asyncio.wait_for(running, REQUEST_TIMEOUT_S * 2)

    unacceptable = [a for a in load.answers if a.problem is not None]
    assert not unacceptable, f"{len(unacceptable)} unacceptable answers: {unacceptable[:5]}"
    assert any(a.call == "create" and a.status == 503 for a in during), (
        f"the outage was not felt: {sorted({a.status for a in during})}"
    )
    back_after_s = min(a.answered for a in load.created_since(restored_at)) - restored_at
    assert back_after_s < BACK_WITHIN_S, f"first create after the restore took {back_after_s}s"

    async def all_final() -> list[Task] | None:
        tasks, _, _ = await _account_books(runtime, customer.account.id)
        return tasks if all(t.status not in ACTIVE_STATUSES for t in tasks) else None

    tasks = await eventually(all_final, within_s=60, what="every task to reach a final state")
    _, entries, balance = await _account_books(runtime, customer.account.id)
    task_ids = {t.id for t in tasks}
    answered_200 = {a.task_id for a in load.answers if a.task_id is not None}
    assert answered_200 <= task_ids, f"creates answered 200 but lost: {answered_200 - task_ids}"
    # A create whose COMMIT reached the server just before the cut is stored (and runs, and
    # is charged) although its client got a 503: at most one per client in flight then.
    assert len(task_ids - answered_200) <= CLIENTS, "tasks stored that nobody asked for"
    holds = {e.task_id for e in entries if e.kind == "hold"}
    assert holds == task_ids, "a hold without its task, or a task without its hold"
    closed = sorted(e.task_id or "" for e in entries if e.kind in ("settle", "refund"))
    assert closed == sorted(task_ids), "a finished task's hold is not settled or refunded once"
    assert balance == sum(e.amount for e in entries)


async def _async(value: bool) -> bool:
    return value
