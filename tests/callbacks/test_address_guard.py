"""Callback URLs go through the outbound address guard at creation and again at every send:
private targets are refused (the field named, nothing charged) unless the operator allows
them, and a name that turns private after creation is refused when it is sent to."""

from __future__ import annotations

import httpx
import pytest

from app.core.config import Settings
from app.net.url_guard import resolving_with
from tests.callbacks.helpers import (
    T2I,
    app_with,
    create_task,
    settled_delivery,
    verify,
    webhook_secret,
)
from tests.conftest import Customer
from tests.support.apps import wait_for_terminal, worker_running
from tests.support.receiver import receiving

PUBLIC = "93.184.215.14"
REFUSED = [
    "http://127.0.0.1:8080/hook",
    "http://10.0.0.1/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[::ffff:127.0.0.1]/hook",
    "http://2130706433/hook",
]


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    """The allowlist off, as an operator starts."""
    return {k: v for k, v in settings_env.items() if k != "GENGATE_OUTBOUND_ALLOWLIST"}


async def _balance(client: httpx.AsyncClient, customer: Customer) -> int:
    response = await client.get("/api/v1/account", headers=customer.headers)
    return int(response.json()["data"]["balance"])


async def _refused(client: httpx.AsyncClient, customer: Customer, url: str) -> None:
    for spelling in ("callBackUrl", "callbackUrl"):
        body = {"model": T2I, "input": {"prompt": "x"}, spelling: url}
        response = await client.post("/api/v1/jobs/createTask", json=body, headers=customer.headers)
        assert response.status_code == 400, (url, response.text)
        # The error names the field as the caller spelled it.
        assert response.json()["data"]["field"] == spelling, (url, response.text)
        assert "not allowed" in response.json()["msg"], (url, response.text)


@pytest.mark.parametrize("url", REFUSED)
async def test_private_callback_urls_are_refused_at_creation(
    client: httpx.AsyncClient, customer: Customer, url: str
) -> None:
    before = await _balance(client, customer)
    await _refused(client, customer, url)
    assert await _balance(client, customer) == before


async def test_the_allowlist_lets_its_networks_through_and_no_more(settings: Settings) -> None:
    assert settings.outbound_allowlist == []
    with receiving() as receiver:
        async with app_with(settings, outbound_allowlist=["127.0.0.1/32"]) as (
            client,
            _runtime,
            customer,
        ):
            for url in ("http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data"):
                await _refused(client, customer, url)
            task_id = await create_task(client, customer, receiver.url + "/hook")
            delivery = await settled_delivery(client, customer, task_id)
            secret = await webhook_secret(client, customer)
    assert delivery["state"] == "delivered"
    (request,) = receiver.on("/hook")
    assert verify(secret, request)["data"]["taskId"] == task_id


async def test_a_name_that_turns_to_loopback_after_creation_is_refused_at_send(
    settings: Settings,
) -> None:
    answers = {"hooks.example.test": [PUBLIC]}

    async def resolve(host: str, _port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"{host} does not resolve")
        return answers[host]

    with receiving() as receiver, resolving_with(resolve):
        # No worker yet: the answer changes between creation and the first send.
        async with app_with(settings, workers_in_process=False) as (client, runtime, customer):
            port = receiver.url.rsplit(":", 1)[1]
            task_id = await create_task(client, customer, f"http://hooks.example.test:{port}/hook")
            answers["hooks.example.test"] = ["127.0.0.1"]
            async with worker_running(runtime):
                await wait_for_terminal(client, customer.headers, task_id)
                delivery = await settled_delivery(client, customer, task_id)
    assert receiver.received == []
    assert delivery["state"] == "failed"
    schedule = settings.callback_retry_schedule
    assert len(delivery["attempts"]) == len(schedule) + 1
    for attempt in delivery["attempts"]:
        assert attempt["statusCode"] is None and attempt["error"].startswith("refused:"), attempt
        assert "127.0.0.1" in attempt["error"] and "loopback" in attempt["error"], attempt


async def test_an_allowlisted_host_name_may_resolve_to_loopback(settings: Settings) -> None:
    async def resolve(host: str, _port: int) -> list[str]:
        if host != "hooks.internal.test":
            raise OSError(f"{host} does not resolve")
        return ["127.0.0.1"]

    with receiving() as receiver, resolving_with(resolve):
        async with app_with(settings, outbound_allowlist=["hooks.internal.test"]) as (
            client,
            _runtime,
            customer,
        ):
            port = receiver.url.rsplit(":", 1)[1]
            await _refused(client, customer, receiver.url + "/hook")  # the address is not listed
            task_id = await create_task(client, customer, f"http://hooks.internal.test:{port}/hook")
            delivery = await settled_delivery(client, customer, task_id)
    assert delivery["state"] == "delivered"
    (request,) = receiver.on("/hook")
    assert request.headers["host"] == f"hooks.internal.test:{port}"
