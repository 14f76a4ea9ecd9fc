"""A key without an active-task limit creates through the shortest path its database has (on
PostgreSQL one statement in autocommit): under racing creates the credits stay exact, and a
create the balance cannot cover leaves nothing behind."""

import asyncio

from sqlalchemy import func, select

from app.accounts.models import Account
from app.core.config import UNLIMITED_ACTIVE_TASKS, Settings, TierLimits
from app.credits.models import LedgerEntry
from app.credits.service import ledger_sum
from app.jobs.models import Task
from tests.conftest import make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import running_app, runtime_of

TIERS = {
    "standard": TierLimits(
        create_per_minute=100000, query_per_minute=100000, max_active_tasks=UNLIMITED_ACTIVE_TASKS
    )
}
COVERED = 9
RACING = 24


async def test_racing_creates_spend_exactly_the_balance(settings: Settings) -> None:
    unlimited = settings.model_copy(update={"tiers": TIERS, "workers_in_process": False})
    async with running_app(unlimited) as (app, client):
        runtime = runtime_of(app)
        probe = await make_customer(runtime)
        price = (
            await client.post("/api/v1/jobs/estimate", json=t2i(), headers=probe.headers)
        ).json()["data"]["credits"]
        customer = await make_customer(runtime, credits=COVERED * price + price - 1)
        answers = await asyncio.gather(
            *(
                client.post("/api/v1/jobs/createTask", json=t2i(), headers=customer.headers)
                for _ in range(RACING)
            )
        )
        codes = [a.status_code for a in answers]
        assert codes.count(200) == COVERED and codes.count(402) == RACING - COVERED, codes
        refused = next(a for a in answers if a.status_code == 402)
        assert refused.json()["msg"] == "insufficient credits"
        created = {a.json()["data"]["taskId"] for a in answers if a.status_code == 200}
        account_id = customer.account.id
        async with runtime.sessions() as s:
            tasks = set(
                await s.scalars(select(Task.id).where(Task.account_id == account_id))  # type: ignore[arg-type]
            )
            holds = list(
                await s.scalars(
                    select(LedgerEntry).where(
                        LedgerEntry.account_id == account_id,  # type: ignore[arg-type]
                        LedgerEntry.kind == "hold",  # type: ignore[arg-type]
                    )
                )
            )
            balance = await s.scalar(select(Account.balance).where(Account.id == account_id))  # type: ignore[arg-type]
            total = await ledger_sum(s, account_id=account_id)
        assert tasks == created == {h.task_id for h in holds}
        assert balance == total == price - 1
        # Each hold recorded the balance its own debit left: all different, the last is final.
        assert sorted(h.balance_after for h in holds) == [
            price - 1 + i * price for i in range(COVERED)
        ]
        # The created tasks are queued and readable like any other.
        some = next(iter(created))
        read = await client.get(
            "/api/v1/jobs/recordInfo", params={"taskId": some}, headers=customer.headers
        )
        assert read.status_code == 200 and read.json()["data"]["state"] == "waiting"


async def test_a_create_the_balance_cannot_cover_leaves_nothing(settings: Settings) -> None:
    unlimited = settings.model_copy(update={"tiers": TIERS, "workers_in_process": False})
    async with running_app(unlimited) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime, credits=0)
        answer = await client.post("/api/v1/jobs/createTask", json=t2i(), headers=customer.headers)
        assert answer.status_code == 402
        assert answer.json()["msg"] == "insufficient credits"
        async with runtime.sessions() as s:
            tasks = await s.scalar(select(func.count()).select_from(Task))
            holds = await s.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(
                    LedgerEntry.account_id == customer.account.id,  # type: ignore[arg-type]
                    LedgerEntry.kind == "hold",  # type: ignore[arg-type]
                )
            )
            balance = await s.scalar(
                select(Account.balance).where(Account.id == customer.account.id)
            )  # type: ignore[arg-type]
        assert (tasks, holds, balance) == (0, 0, 0)
