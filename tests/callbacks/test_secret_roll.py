"""The account's whsec_ secret: made on first use, rolled with an overlap during which a
receiver holding either secret verifies, shown only to keys:manage, never logged."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from app.callbacks.models import WebhookSecret
from app.core.config import Settings
from app.core.ids import now_ms
from app.keys.service import create_api_key
from app.runtime import Runtime
from tests.callbacks.helpers import create_task, settled_delivery, verify, webhook_secret
from tests.conftest import Customer, make_customer
from tests.support.receiver import receiving
from tests.support.server import LiveServer, start_server

DAY_MS = 24 * 3600 * 1000


def _key_bytes(secret: str) -> bytes:
    assert secret.startswith("whsec_"), secret
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


async def test_the_secret_is_made_on_first_use_and_kept(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    first = await client.get("/api/v1/account/webhook-secret", headers=customer.headers)
    assert first.status_code == 200, first.text
    shown = first.json()["data"]
    assert 24 <= len(_key_bytes(shown["secret"])) <= 64
    assert shown["previousSecretValidUntil"] is None and shown["rollTime"] is None
    assert await webhook_secret(client, customer) == shown["secret"]
    other = await make_customer(runtime)
    assert await webhook_secret(client, other) != shown["secret"]


async def test_during_the_overlap_old_and_new_secrets_both_verify(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    old = await webhook_secret(client, customer)
    rolled = await client.post("/api/v1/account/webhook-secret/roll", headers=customer.headers)
    assert rolled.status_code == 200, rolled.text
    new = rolled.json()["data"]["secret"]
    assert new != old and 24 <= len(_key_bytes(new)) <= 64
    until = rolled.json()["data"]["previousSecretValidUntil"]
    assert abs(until - (now_ms() + DAY_MS)) < 60_000
    assert await webhook_secret(client, customer) == new

    with receiving() as receiver:
        task_id = await create_task(client, customer, receiver.url + "/hook")
        delivery = await settled_delivery(client, customer, task_id)
        (request,) = receiver.on("/hook")
    assert delivery["state"] == "delivered"
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert verify(old, request) == verify(new, request)
    assert verify(new, request)["data"]["taskId"] == task_id
    stranger = "whsec_" + base64.b64encode(b"s" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(request.body.decode(), request.headers)


async def test_keys_without_keys_manage_get_403(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    before = await webhook_secret(client, customer)
    # A key of the same account, without keys:manage.
    async with runtime.sessions() as session:
        _key, plain = await create_api_key(
            session,
            account_id=customer.account.id,
            name="tasks only",
            tier="standard",
            scopes=["tasks:read", "tasks:create"],
        )
        await session.commit()
    limited = Customer(customer.account, plain)
    for method, path in (
        ("GET", "/api/v1/account/webhook-secret"),
        ("POST", "/api/v1/account/webhook-secret/roll"),
    ):
        response = await client.request(method, path, headers=limited.headers)
        assert response.status_code == 403, (path, response.text)
        assert "keys:manage" in response.json()["msg"]
        assert "whsec_" not in response.text
    assert await webhook_secret(client, customer) == before


@pytest.fixture
def live_server(settings_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server({**settings_env, "GENGATE_LOG_LEVEL": "DEBUG"}, tmp_path)
    yield server
    server.stop()


async def test_the_secret_never_reaches_the_log(
    settings: Settings, live_server: LiveServer
) -> None:
    # A runtime without workers: the server's own worker must be the one that signs.
    runtime = await Runtime.start(settings)
    try:
        customer = await make_customer(runtime)
    finally:
        await runtime.close()
    with receiving() as receiver:
        async with httpx.AsyncClient(base_url=live_server.base_url) as http:
            old = await webhook_secret(http, customer)
            rolled = await http.post(
                "/api/v1/account/webhook-secret/roll", headers=customer.headers
            )
            new = rolled.json()["data"]["secret"]
            task_id = await create_task(http, customer, receiver.url + "/hook")
            await settled_delivery(http, customer, task_id)
        live_server.stop()
    (request,) = receiver.on("/hook")
    assert verify(old, request) == verify(new, request)
    log = live_server.log()
    assert f"callback {request.headers['webhook-id']} attempt 1" in log  # the sends are logged
    for secret in (old, new):
        for text in (log, live_server.stdout()):
            assert secret.removeprefix("whsec_") not in text


async def test_after_the_overlap_only_the_new_secret_signs(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    old = await webhook_secret(client, customer)
    rolled = await client.post("/api/v1/account/webhook-secret/roll", headers=customer.headers)
    new = rolled.json()["data"]["secret"]
    async with runtime.sessions() as session:
        # The 24 h overlap has passed.
        row = await session.get(WebhookSecret, customer.account.id)
        assert row is not None
        row.previous_until = now_ms() - 1
        await session.commit()
    shown = (await client.get("/api/v1/account/webhook-secret", headers=customer.headers)).json()
    assert shown["data"]["previousSecretValidUntil"] is None
    with receiving() as receiver:
        task_id = await create_task(client, customer, receiver.url + "/hook")
        await settled_delivery(client, customer, task_id)
        (request,) = receiver.on("/hook")
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    assert verify(new, request)["data"]["taskId"] == task_id
    with pytest.raises(WebhookVerificationError):
        verify(old, request)


async def test_concurrent_first_uses_make_one_secret(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    shown = await asyncio.gather(*(webhook_secret(client, customer) for _ in range(6)))
    assert len(set(shown)) == 1
    assert await webhook_secret(client, customer) == shown[0]


async def test_concurrent_rolls_take_turns(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    first = await webhook_secret(client, customer)
    rolls = await asyncio.gather(
        *(
            client.post("/api/v1/account/webhook-secret/roll", headers=customer.headers)
            for _ in range(4)
        )
    )
    assert [r.status_code for r in rolls] == [200] * 4, [r.text for r in rolls]
    made = {r.json()["data"]["secret"] for r in rolls}
    assert len(made) == 4 and first not in made
    # Each roll replaced the one before it: the secret still honoured beside the current
    # one is another roll's, never the secret all of them started from.
    async with runtime.sessions() as session:
        row = await session.get(WebhookSecret, customer.account.id)
        assert row is not None
    assert row.secret in made and row.previous_secret in made - {row.secret}
