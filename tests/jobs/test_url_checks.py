"""URLs are checked at creation, names included, so nothing is charged for what the server
could have refused; a name that changes its answer later fails refunded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.net.url_guard import resolving_with
from tests.conftest import Customer, make_customer
from tests.support.apps import runtime_of, wait_for_terminal, worker_running

PUBLIC = "93.184.215.14"
Resolve = Callable[[str, int], Awaitable[list[str]]]


def _dns(answers: dict[str, list[str]]) -> Resolve:
    """A resolver answering from `answers`; other names do not resolve."""

    async def resolve(host: str, _port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"{host} does not resolve")
        return answers[host]

    return resolve


@pytest.fixture
def dns() -> Iterator[dict[str, list[str]]]:
    answers: dict[str, list[str]] = {}
    with resolving_with(_dns(answers)):
        yield answers


async def _balance(client: httpx.AsyncClient, customer: Customer) -> int:
    response = await client.get("/api/v1/account", headers=customer.headers)
    return int(response.json()["data"]["balance"])


def _i2i(field: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-image-2-image-to-image",
        "input": {"prompt": "make it blue", field: [url], **extra},
    }


@pytest.mark.parametrize("field", ["input_urls", "image_urls"])
async def test_a_name_that_resolves_to_loopback_is_refused_free(
    client: httpx.AsyncClient, customer: Customer, dns: dict[str, list[str]], field: str
) -> None:
    dns["images.internal.test"] = ["127.0.0.1"]
    before = await _balance(client, customer)
    for path in ("/api/v1/jobs/createTask", "/api/v1/jobs/estimate"):
        response = await client.post(
            path, json=_i2i(field, "http://images.internal.test/a.png"), headers=customer.headers
        )
        assert response.status_code == 400, response.text
        body = response.json()
        # The field the caller sent, not its canonical alias.
        assert body["data"]["field"] == field
        assert f"{field}[0] is not allowed" in body["msg"] and "127.0.0.1" in body["msg"]
    assert await _balance(client, customer) == before


async def test_a_callback_name_that_resolves_to_a_private_address_is_refused(
    client: httpx.AsyncClient, customer: Customer, dns: dict[str, list[str]]
) -> None:
    dns["hooks.internal.test"] = ["10.1.2.3", PUBLIC]
    body = {
        "model": "gpt-image-2-text-to-image",
        "input": {"prompt": "x"},
        "callBackUrl": "https://hooks.internal.test/done",
    }
    response = await client.post("/api/v1/jobs/createTask", json=body, headers=customer.headers)
    assert response.status_code == 400, response.text
    assert response.json()["data"]["field"] == "callBackUrl"
    assert "10.1.2.3" in response.json()["msg"] and "private" in response.json()["msg"]


async def test_names_that_do_not_resolve_in_time_are_let_through(
    client: httpx.AsyncClient, customer: Customer, dns: dict[str, list[str]]
) -> None:
    response = await client.post(
        "/api/v1/jobs/estimate",
        json=_i2i("input_urls", "https://nowhere.invalid/a.png"),
        headers=customer.headers,
    )
    assert response.status_code == 200, response.text


async def test_a_name_that_turns_private_after_creation_fails_refunded(
    idle_app: tuple[FastAPI, httpx.AsyncClient], dns: dict[str, list[str]]
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    dns["rebind.example.test"] = [PUBLIC]
    response = await client.post(
        "/api/v1/jobs/createTask",
        json=_i2i("image_urls", "https://rebind.example.test/a.png"),
        headers=customer.headers,
    )
    assert response.status_code == 200, response.text
    task_id = response.json()["data"]["taskId"]
    dns["rebind.example.test"] = ["127.0.0.1"]
    async with worker_running(runtime):
        data = await wait_for_terminal(client, customer.headers, task_id)
    assert (data["failCode"], data["credits"]) == ("input_unreachable", 0), data
    assert "loopback" in data["failMsg"]
    assert await _balance(client, customer) == 1000
