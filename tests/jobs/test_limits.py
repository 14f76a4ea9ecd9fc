"""Rate limits per key and group, active-task limits, and credit races."""

import asyncio

from sqlalchemy import func, select

from app.core.config import Settings, TierLimits
from app.jobs.models import Task
from tests.conftest import make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import running_app, runtime_of
from tests.support.backends import TEST_REDIS_URL

TIGHT = {
    "tight": TierLimits(create_per_minute=3, query_per_minute=2, max_active_tasks=100),
    "standard": TierLimits(create_per_minute=1000, query_per_minute=1000, max_active_tasks=2),
    "wide": TierLimits(create_per_minute=100000, query_per_minute=100000, max_active_tasks=100000),
}


def _limited(settings: Settings) -> Settings:
    return settings.model_copy(update={"tiers": TIGHT, "workers_in_process": False})


async def test_rate_limit_per_group_with_headers_and_details(settings: Settings) -> None:
    async with running_app(_limited(settings)) as (app, client):
        customer = await make_customer(runtime_of(app), tier="tight")
        statuses = []
        for _ in range(4):
            response = await client.post(
                "/api/v1/jobs/createTask", json=t2i(), headers=customer.headers
            )
            statuses.append(response.status_code)
        assert statuses == [200, 200, 200, 429]
        body = response.json()
        assert body["code"] == 429 and body["msg"] == "rate limit exceeded"
        data = body["data"]
        assert data["error"] == "rate limit exceeded"
        assert (data["limit"], data["tier"], data["windowSeconds"]) == (3, "tight", 60)
        assert 1 <= data["retryAfter"] <= 60
        assert response.headers["Retry-After"] == str(data["retryAfter"])
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Remaining"] == "0"

        # recordInfo is its own group with its own limit.
        task = (await client.get("/api/v1/account", headers=customer.headers)).status_code
        assert task == 200
        query = [
            (
                await client.get(
                    "/api/v1/jobs/recordInfo", params={"taskId": "task_x"}, headers=customer.headers
                )
            ).status_code
            for _ in range(3)
        ]
        assert query == [404, 404, 429]


async def test_limits_are_shared_through_redis_and_local_without(settings: Settings) -> None:
    """Two app instances: with Redis one budget for both; without Redis, each its own."""
    limited = _limited(settings)
    async with running_app(limited) as (app_a, client_a), running_app(limited) as (_b, client_b):
        customer = await make_customer(runtime_of(app_a), tier="tight")
        codes = []
        for client in (client_a, client_b, client_a, client_b):
            response = await client.post(
                "/api/v1/jobs/createTask", json=t2i(), headers=customer.headers
            )
            codes.append(response.status_code)
    if TEST_REDIS_URL:
        assert codes == [200, 200, 200, 429]
    else:
        assert codes == [200, 200, 200, 200]


async def test_active_task_limit(settings: Settings) -> None:
    async with running_app(_limited(settings)) as (app, client):
        customer = await make_customer(runtime_of(app), tier="standard")
        codes = [
            (
                await client.post("/api/v1/jobs/createTask", json=t2i(), headers=customer.headers)
            ).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        refused = await client.post("/api/v1/jobs/createTask", json=t2i(), headers=customer.headers)
        assert refused.json()["msg"] == "too many active tasks"
        assert refused.json()["data"]["limit"] == 2
        # Finishing one frees a slot.
        async with runtime_of(app).sessions() as s:
            first = (await s.execute(select(Task).limit(1))).scalar_one()
        await client.post(
            "/api/v1/jobs/cancel", params={"taskId": first.id}, headers=customer.headers
        )
        again = await client.post("/api/v1/jobs/createTask", json=t2i(), headers=customer.headers)
        assert again.status_code == 200


async def test_300_racing_creates_against_credits_for_100(settings: Settings) -> None:
    async with running_app(_limited(settings)) as (app, client):
        probe = await make_customer(runtime_of(app), tier="wide")
        price = (
            await client.post("/api/v1/jobs/estimate", json=t2i(), headers=probe.headers)
        ).json()["data"]["credits"]
        customer = await make_customer(runtime_of(app), credits=100 * price, tier="wide")
        responses = await asyncio.gather(
            *(
                client.post("/api/v1/jobs/createTask", json=t2i(), headers=customer.headers)
                for _ in range(300)
            )
        )
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 100 and codes.count(402) == 200
        account = (await client.get("/api/v1/account", headers=customer.headers)).json()["data"]
        assert account["balance"] == 0
        async with runtime_of(app).sessions() as s:
            count = await s.scalar(
                select(func.count()).where(Task.account_id == customer.account.id)  # type: ignore[arg-type]
            )
        assert count == 100
