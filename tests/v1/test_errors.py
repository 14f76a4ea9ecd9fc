"""Errors of the /v1 surface: exactly `{"message": ...}`, with the seed's statuses; the
/api/v1 surface keeps its envelope."""

import httpx
import pytest
from fastapi import FastAPI

from app.api.routes import v1
from app.core.config import Settings, TierLimits
from app.core.errors import OUTAGE_RETRY_AFTER_S, ServiceUnavailable
from app.keys.scopes import Scope
from tests.conftest import Customer, make_customer
from tests.support.apps import running_app, runtime_of

READS = ("/v1/tasks", "/v1/tasks/task_0000", "/v1/assets/media_0000")


@pytest.mark.parametrize("path", READS)
async def test_401_without_or_with_a_wrong_key(client: httpx.AsyncClient, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer sk_not_a_real_key"}, {"Authorization": "x"}):
        response = await client.get(path, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json() == {"message": "authentication failed"}
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", READS)
async def test_403_for_a_key_without_the_read_scope(app: FastAPI, path: str) -> None:
    runtime = runtime_of(app)
    writer = await make_customer(runtime, scopes=[Scope.TASKS_CREATE.value])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get(path, headers=writer.headers)
    assert response.status_code == 403, response.text
    assert list(response.json()) == ["message"]
    assert "tasks:read" in response.json()["message"]


async def test_404_shapes(client: httpx.AsyncClient, customer: Customer) -> None:
    task = await client.get("/v1/tasks/task_0000", headers=customer.headers)
    assert (task.status_code, task.json()) == (404, {"message": "task not found"})
    asset = await client.get("/v1/assets/media_0000", headers=customer.headers)
    assert (asset.status_code, asset.json()) == (404, {"message": "asset not found"})


async def test_429_with_headers_shares_the_record_info_group(settings: Settings) -> None:
    tiers = {
        **settings.tiers,
        "tight": TierLimits(create_per_minute=10, query_per_minute=3, max_active_tasks=10),
    }
    async with running_app(settings.model_copy(update={"tiers": tiers})) as (app, client):
        customer = await make_customer(runtime_of(app), tier="tight")
        info = await client.get(
            "/api/v1/jobs/recordInfo", params={"taskId": "task_x"}, headers=customer.headers
        )
        assert info.status_code == 404
        assert (await client.get("/v1/tasks", headers=customer.headers)).status_code == 200
        one = await client.get("/v1/tasks/task_x", headers=customer.headers)
        assert one.status_code == 404
        for path in ("/v1/assets/media_x", "/v1/tasks"):
            limited = await client.get(path, headers=customer.headers)
            assert limited.status_code == 429, limited.text
            assert limited.json() == {"message": "rate limit exceeded"}
            retry_after = int(limited.headers["Retry-After"])
            assert 1 <= retry_after <= 60
            assert limited.headers["RateLimit-Limit"] == "3"
            assert limited.headers["RateLimit-Remaining"] == "0"
            assert limited.headers["RateLimit-Reset"] == str(retry_after)
            assert limited.headers["RateLimit-Policy"] == "3;w=60"
        # And the jobs surface, over the same budget, keeps its envelope.
        envelope = await client.get(
            "/api/v1/jobs/recordInfo", params={"taskId": "task_x"}, headers=customer.headers
        )
        assert envelope.status_code == 429
        assert envelope.json()["msg"] == "rate limit exceeded"
        assert envelope.json()["data"]["limit"] == 3


async def test_500_says_only_internal_error(
    client: httpx.AsyncClient, customer: Customer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret detail sk_live_should_not_leak")

    monkeypatch.setattr(v1, "list_tasks", broken)
    response = await client.get("/v1/tasks", headers=customer.headers)
    assert response.status_code == 500
    assert response.json() == {"message": "internal error"}
    assert "sk_live" not in response.text


async def test_400_for_a_bad_query_is_a_message_naming_the_field(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    response = await client.get("/v1/tasks", params={"pageSize": 101}, headers=customer.headers)
    assert response.status_code == 400
    assert response.json() == {"message": "pageSize: Input should be less than or equal to 100"}
    long_id = await client.get("/v1/tasks/" + "x" * 201, headers=customer.headers)
    assert long_id.status_code == 400
    assert long_id.json()["message"].startswith("task_id")


async def test_the_jobs_surface_keeps_its_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/jobs/recordInfo", params={"taskId": "task_x"})
    assert response.status_code == 401
    body = response.json()
    assert (body["code"], body["msg"]) == (401, "authentication failed")
    assert body["data"]["error"] == "authentication failed"


async def test_an_outage_is_a_503_message_with_retry_after(
    client: httpx.AsyncClient, customer: Customer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(*_args: object, **_kwargs: object) -> None:
        raise ServiceUnavailable()

    monkeypatch.setattr(v1, "read_task", unavailable)
    response = await client.get("/v1/tasks/task_x", headers=customer.headers)
    assert response.status_code == 503
    assert response.json() == {"message": "service temporarily unavailable"}
    assert response.headers["Retry-After"] == str(OUTAGE_RETRY_AFTER_S)


async def test_an_unknown_v1_path_or_method_answers_in_the_seeds_shape(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.get("/v1/nothing-here")
    assert (missing.status_code, missing.json()) == (404, {"message": "not found"})
    wrong = await client.delete("/v1/tasks")
    assert (wrong.status_code, wrong.json()) == (405, {"message": "method not allowed"})
    assert wrong.headers["allow"] == "GET"
    elsewhere = await client.get("/api/v1/nothing-here")
    assert elsewhere.json()["code"] == 404  # the jobs surface keeps its envelope
