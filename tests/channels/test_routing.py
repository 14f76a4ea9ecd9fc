"""Tasks routed over channels of fake upstreams: real adapters, failover, ambiguous submits,
breakers, upstream callbacks, upstream cancel, attempts and the usage report."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col
from standardwebhooks import Webhook

from app.accounts.models import Account
from app.channels.attempts import list_attempts
from app.channels.report import usage_report
from app.core.config import Settings
from app.core.ids import now_ms
from app.jobs.models import Task
from app.runtime import Runtime
from tests.channels.support import VIDEO, channel_app, channel_file, modelark_channel
from tests.conftest import Customer, make_customer
from tests.fakes.kie import DEFAULT_KEY as KIE_KEY
from tests.fakes.kie import Script as KieScript
from tests.fakes.kie import running_kie
from tests.fakes.modelark import Canned, FakeModelArk, Script, error_body, running_modelark
from tests.support.apps import eventually, runtime_of, wait_for_terminal

KEY = "ark-test-key-0123456789"


@pytest.fixture(autouse=True)
def _ark_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ARK_KEY", KEY)


@pytest.fixture
def ark_a() -> Iterator[FakeModelArk]:
    with running_modelark(KEY) as fake:
        yield fake


@pytest.fixture
def ark_b() -> Iterator[FakeModelArk]:
    with running_modelark(KEY) as fake:
        yield fake


async def _create(client: httpx.AsyncClient, customer: Customer, **extra: Any) -> str:
    response = await client.post(
        "/api/v1/jobs/createTask",
        json={"model": VIDEO, "input": {"prompt": "a lighthouse at dusk", **extra}},
        headers=customer.headers,
    )
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"]["taskId"]
    return task_id


async def _balance(runtime: Runtime, customer: Customer) -> int:
    async with runtime.sessions() as session:
        account = await session.get(Account, customer.account.id)
    assert account is not None
    return account.balance


async def _attempts(runtime: Runtime, task_id: str) -> list[tuple[str, str, str]]:
    async with runtime.sessions() as session:
        rows = await list_attempts(session, task_id=task_id)
    return [(a.channel, a.kind, a.outcome) for a in rows]


async def test_a_video_runs_on_modelark_and_is_served_from_our_media(
    settings: Settings, tmp_path: Path, ark_a: FakeModelArk
) -> None:
    path = channel_file(tmp_path / "channels.toml", modelark_channel("ark", ark_a.base_url))
    async with channel_app(settings, path) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        task_id = await _create(client, customer, duration=5)
        data = await wait_for_terminal(client, customer.headers, task_id)
        assert data["state"] == "success", data
        # The upstream's file goes away; ours stays.
        for upstream_task in ark_a.tasks:
            ark_a.expire_video(upstream_task)
        url = json.loads(data["resultJson"])["resultUrls"][0]
        media = await client.get(url)
        assert media.status_code == 200
        assert media.content[4:8] == b"ftyp"
        sent = ark_a.on("POST")[0].json()
        assert sent["model"] == "seedance-2-0-pro" and sent["duration"] == 5
        assert await _attempts(runtime, task_id) == [
            ("ark", "submit", "accepted"),
            ("ark", "poll", "succeeded"),
        ]
        async with runtime.sessions() as session:
            task = await session.get(Task, task_id)
            assert task is not None and task.channel == "ark"
            assert task.upstream_cost is not None and "108900" in task.upstream_cost
            rows = await usage_report(session, since=0)
        (row,) = [r for r in rows if r.model == VIDEO]
        assert (row.channel, row.tasks, row.succeeded, row.failed) == ("ark", 1, 1, 0)
        assert row.credits_charged == task.price
        assert row.upstream_cost["tokens"]["total_tokens"] == 108900


async def test_a_refusal_fails_over_to_the_next_channel(
    settings: Settings, tmp_path: Path, ark_a: FakeModelArk, ark_b: FakeModelArk
) -> None:
    ark_a.fail_next(Canned(503, error_body("ServiceUnavailable"), method="POST"))
    path = channel_file(
        tmp_path / "channels.toml",
        modelark_channel("primary", ark_a.base_url, priority=10),
        modelark_channel("fallback", ark_b.base_url, priority=1),
    )
    async with channel_app(settings, path, retry_backoff_seconds=30.0) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        task_id = await _create(client, customer)
        data = await wait_for_terminal(client, customer.headers, task_id)
        assert data["state"] == "success", data
        assert len(ark_a.on("POST")) == 1 and len(ark_b.on("POST")) == 1
        assert await _attempts(runtime, task_id) == [
            ("primary", "submit", "refused"),
            ("fallback", "submit", "accepted"),
            ("fallback", "poll", "succeeded"),
        ]


async def test_an_ambiguous_submit_is_never_sent_elsewhere_and_is_refunded(
    settings: Settings, tmp_path: Path, ark_a: FakeModelArk, ark_b: FakeModelArk
) -> None:
    ark_a.fail_next(Canned(hang=True, method="POST"))
    path = channel_file(
        tmp_path / "channels.toml",
        modelark_channel("primary", ark_a.base_url, priority=10, request_timeout_seconds=0.5),
        modelark_channel("fallback", ark_b.base_url, priority=1),
    )
    async with channel_app(settings, path) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        before = await _balance(runtime, customer)
        task_id = await _create(client, customer)
        data = await wait_for_terminal(client, customer.headers, task_id)
        assert data["state"] == "fail" and data["failCode"] == "provider_timeout", data
        assert "did not send it again" in data["failMsg"]
        assert len(ark_a.on("POST")) == 1
        assert ark_b.on("POST") == []
        assert await _balance(runtime, customer) == before
        assert await _attempts(runtime, task_id) == [("primary", "submit", "ambiguous")]


async def test_the_breaker_opens_after_failures_and_skips_the_channel(
    settings: Settings, tmp_path: Path, ark_a: FakeModelArk, ark_b: FakeModelArk
) -> None:
    ark_a.fail_next(*[Canned(503, error_body("ServiceUnavailable"), method="POST")] * 10)
    path = channel_file(
        tmp_path / "channels.toml",
        modelark_channel("primary", ark_a.base_url, priority=10),
        modelark_channel("fallback", ark_b.base_url, priority=1),
    )
    overrides = {"breaker_failures": 2, "breaker_cooldown_seconds": 3600.0}
    async with channel_app(settings, path, **overrides) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        for _ in range(4):
            task_id = await _create(client, customer)
            data = await wait_for_terminal(client, customer.headers, task_id)
            assert data["state"] == "success", data
        # Two refusals opened the breaker; the last two tasks went straight to the fallback.
        assert len(ark_a.on("POST")) == 2
        assert len(ark_b.on("POST")) == 4
        health = {h.name: h.breaker for h in runtime.channels.router.health()}
        assert health == {"primary": "open", "fallback": "closed", "local": "closed"}


async def test_the_callers_bad_input_never_opens_the_breaker(
    settings: Settings, tmp_path: Path, ark_a: FakeModelArk
) -> None:
    refusal = Canned(400, error_body("InvalidParameter.Prompt", "bad prompt"), method="POST")
    ark_a.fail_next(*[refusal] * 4)
    path = channel_file(tmp_path / "channels.toml", modelark_channel("ark", ark_a.base_url))
    async with channel_app(settings, path, breaker_failures=2) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        for _ in range(4):
            task_id = await _create(client, customer)
            data = await wait_for_terminal(client, customer.headers, task_id)
            assert data["failCode"] == "invalid_input", data
        (ark,) = [h for h in runtime.channels.router.health() if h.name == "ark"]
        assert (ark.breaker, ark.consecutive_failures) == ("closed", 0)


async def test_a_callback_from_the_upstream_makes_the_poll_happen_now(
    settings: Settings, tmp_path: Path, ark_a: FakeModelArk
) -> None:
    ark_a.script = Script(queued_polls=0, running_polls=0)
    path = channel_file(
        tmp_path / "channels.toml",
        modelark_channel("ark", ark_a.base_url, poll_interval_seconds=3600),
    )
    overrides = {"public_url": "http://testserver"}
    async with channel_app(settings, path, **overrides) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        task_id = await _create(client, customer)
        await eventually(lambda: _held(runtime, task_id), what="the upstream to hold the task")
        sent = ark_a.on("POST")[0].json()
        callback_url = sent["callback_url"]
        assert callback_url.startswith("http://testserver/api/v1/upstream/ark/callback?token=")
        upstream_id = next(iter(ark_a.tasks))
        forged = await client.post(
            "/api/v1/upstream/ark/callback?token=wrong", json={"id": upstream_id}
        )
        assert forged.status_code == 401
        answer = await client.post(callback_url, json={"id": upstream_id, "status": "succeeded"})
        assert answer.status_code == 200
        data = await wait_for_terminal(client, customer.headers, task_id, within_s=20)
        assert data["state"] == "success", data


async def _held(runtime: Runtime, task_id: str) -> bool:
    async with runtime.sessions() as session:
        task = await session.get(Task, task_id)
        return task is not None and task.upstream_id is not None


async def test_cancel_stops_the_upstream_job_and_refunds_once(
    settings: Settings, tmp_path: Path, ark_a: FakeModelArk
) -> None:
    ark_a.script = Script(queued_polls=10_000)
    path = channel_file(
        tmp_path / "channels.toml",
        modelark_channel("ark", ark_a.base_url, poll_interval_seconds=0.2),
    )
    async with channel_app(settings, path) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        before = await _balance(runtime, customer)
        task_id = await _create(client, customer)
        await eventually(lambda: _held(runtime, task_id), what="the upstream to hold the task")
        canceled = await client.post(
            "/api/v1/jobs/cancel", params={"taskId": task_id}, headers=customer.headers
        )
        assert canceled.status_code == 200, canceled.text
        await eventually(lambda: _as_true(ark_a.on("DELETE")), what="the upstream cancel")
        (upstream,) = ark_a.tasks.values()
        assert upstream.status == "cancelled"
        assert await _balance(runtime, customer) == before
        data = await wait_for_terminal(client, customer.headers, task_id)
        assert data["failCode"] == "canceled"


async def _as_true(value: object) -> bool:
    return bool(value)


async def test_a_signed_upstream_callback_must_carry_a_valid_signature(
    settings: Settings, tmp_path: Path, ark_a: FakeModelArk, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "whsec_" + base64.b64encode(b"upstream-signing-secret-32-bytes").decode()
    monkeypatch.setenv("TEST_UPSTREAM_WEBHOOK_SECRET", secret)
    ark_a.script = Script(queued_polls=0, running_polls=0)
    path = channel_file(
        tmp_path / "channels.toml",
        modelark_channel(
            "ark",
            ark_a.base_url,
            poll_interval_seconds=3600,
            webhook_secret_env="TEST_UPSTREAM_WEBHOOK_SECRET",
        ),
    )
    async with channel_app(settings, path, public_url="http://testserver") as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        task_id = await _create(client, customer)
        await eventually(lambda: _held(runtime, task_id), what="the upstream to hold the task")
        callback_url = ark_a.on("POST")[0].json()["callback_url"]
        body = json.dumps({"id": next(iter(ark_a.tasks))}).encode()
        unsigned = await client.post(callback_url, content=body)
        assert unsigned.status_code == 401
        at = datetime.now(tz=UTC)
        signature = Webhook(secret).sign("msg_1", at, body.decode())
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature,
        }
        signed = await client.post(callback_url, content=body, headers=headers)
        assert signed.status_code == 200
        data = await wait_for_terminal(client, customer.headers, task_id, within_s=20)
        assert data["state"] == "success", data


async def test_the_upstreams_queue_position_shows_in_record_info(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_KIE_KEY", KIE_KEY)
    with running_kie(KIE_KEY) as kie:
        kie.script = KieScript(waiting_polls=10_000, queue_position=3)
        channel = {
            "name": "kie",
            "adapter": "kie",
            "base_url": kie.base_url,
            "api_key_env": "TEST_KIE_KEY",
            "models": [VIDEO],
            "poll_interval_seconds": 0.05,
        }
        path = channel_file(tmp_path / "channels.toml", channel)
        async with channel_app(settings, path) as (app, client):
            customer = await make_customer(runtime_of(app))
            task_id = await _create(client, customer)

            async def placed() -> dict[str, Any] | None:
                response = await client.get(
                    "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=customer.headers
                )
                data: dict[str, Any] = response.json()["data"]
                held = data["stage"] == "generating" and data["queuePosition"] is not None
                return data if held else None

            data = await eventually(placed, what="the upstream's queue position")
            assert (data["state"], data["stage"], data["queuePosition"]) == (
                "waiting",
                "generating",
                3,
            )


async def test_a_job_the_upstream_fails_is_refunded(
    settings: Settings, tmp_path: Path, ark_a: FakeModelArk
) -> None:
    ark_a.script = Script(outcome="failed", error_code="InternalServiceError")
    path = channel_file(tmp_path / "channels.toml", modelark_channel("ark", ark_a.base_url))
    async with channel_app(settings, path) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        before = await _balance(runtime, customer)
        task_id = await _create(client, customer)
        data = await wait_for_terminal(client, customer.headers, task_id)
        assert (data["state"], data["failCode"], data["credits"]) == ("fail", "provider_error", 0)
        assert await _balance(runtime, customer) == before
        assert await _attempts(runtime, task_id) == [
            ("ark", "submit", "accepted"),
            ("ark", "poll", "failed"),
        ]


async def test_an_expired_task_has_its_upstream_job_canceled(
    settings: Settings, tmp_path: Path, ark_a: FakeModelArk
) -> None:
    ark_a.script = Script(queued_polls=10_000)
    path = channel_file(
        tmp_path / "channels.toml",
        modelark_channel("ark", ark_a.base_url, poll_interval_seconds=0.2),
    )
    async with channel_app(settings, path) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        task_id = await _create(client, customer)
        await eventually(lambda: _held(runtime, task_id), what="the upstream to hold the task")
        async with runtime.sessions() as session:
            await session.execute(
                update(Task).where(col(Task.id) == task_id).values(deadline_at=now_ms() - 1)
            )
            await session.commit()
        data = await wait_for_terminal(client, customer.headers, task_id)
        assert data["failCode"] == "expired"
        await eventually(lambda: _as_true(ark_a.on("DELETE")), what="the upstream cancel")
        (upstream,) = ark_a.tasks.values()
        assert upstream.status == "cancelled"
