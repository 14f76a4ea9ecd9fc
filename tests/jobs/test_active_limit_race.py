"""The active-task limit is exact under racing creates, and a full queue refuses before
it charges (precedence: too many active tasks before insufficient credits)."""

import asyncio

from sqlalchemy import func, select

from app.core.config import Settings, TierLimits
from app.credits.models import LedgerEntry
from app.jobs.models import Task
from tests.conftest import make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import running_app, runtime_of

TIERS = {
    "standard": TierLimits(create_per_minute=100000, query_per_minute=100000, max_active_tasks=7)
}


async def test_racing_creates_fill_the_active_limit_exactly(settings: Settings) -> None:
    limited = settings.model_copy(update={"tiers": TIERS, "workers_in_process": False})
    async with running_app(limited) as (app, client):
        customer = await make_customer(runtime_of(app), credits=1_000_000)
        responses = await asyncio.gather(
            *(
                client.post("/api/v1/jobs/createTask", json=t2i(), headers=customer.headers)
                for _ in range(60)
            )
        )
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 7 and codes.count(429) == 53
        async with runtime_of(app).sessions() as s:
            tasks = await s.scalar(select(func.count()).select_from(Task))
            holds = await s.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(
                    LedgerEntry.kind == "hold"  # type: ignore[arg-type]
                )
            )
        assert tasks == holds == 7
        account = (await client.get("/api/v1/account", headers=customer.headers)).json()["data"]
        price = (
            await client.post("/api/v1/jobs/estimate", json=t2i(), headers=customer.headers)
        ).json()["data"]["credits"]
        assert account["balance"] == 1_000_000 - 7 * price


async def test_a_full_queue_is_reported_before_missing_credits(settings: Settings) -> None:
    limited = settings.model_copy(update={"tiers": TIERS, "workers_in_process": False})
    async with running_app(limited) as (app, client):
        probe = await make_customer(runtime_of(app))
        price = (
            await client.post("/api/v1/jobs/estimate", json=t2i(), headers=probe.headers)
        ).json()["data"]["credits"]
        customer = await make_customer(runtime_of(app), credits=7 * price)
        for _ in range(7):
            created = await client.post(
                "/api/v1/jobs/createTask", json=t2i(), headers=customer.headers
            )
            assert created.status_code == 200
        refused = await client.post("/api/v1/jobs/createTask", json=t2i(), headers=customer.headers)
        assert refused.status_code == 429 and refused.json()["msg"] == "too many active tasks"
