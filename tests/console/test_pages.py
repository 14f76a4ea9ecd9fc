"""The account pages in process: keys, webhooks, ledger, connect MCP, overview; every form
refused without its CSRF token, and no API key in any page but the one that creates it."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from sqlalchemy import select

from app.callbacks.models import WebhookSecret
from app.credits.service import grant_credits
from app.keys.models import ApiKey
from app.runtime import Runtime
from tests.callbacks.helpers import create_task, settled_delivery
from tests.conftest import Customer, make_customer
from tests.support.apps import eventually, wait_for_terminal
from tests.support.console import console_sign_in
from tests.support.receiver import Receiver, receiving

KEY_TOKEN = re.compile(r"sk_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    """Callbacks may reach a receiver on loopback."""
    return {**settings_env, "GENGATE_OUTBOUND_ALLOWLIST": json.dumps(["127.0.0.1/32"])}


async def _keys(runtime: Runtime, account_id: str) -> list[ApiKey]:
    async with runtime.sessions() as session:
        rows = await session.execute(select(ApiKey).where(ApiKey.account_id == account_id))
        return list(rows.scalars())


async def _secret(runtime: Runtime, account_id: str) -> str | None:
    async with runtime.sessions() as session:
        row = await session.get(WebhookSecret, account_id)
        return row.secret if row else None


async def test_every_page_renders_without_a_key_in_it(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    await console_sign_in(client, customer.key)
    for path, marker in (
        ("/console", 'id="usage"'),
        ("/console/keys", 'id="keys"'),
        ("/console/webhooks", 'id="signing-secret"'),
        ("/console/ledger", 'id="ledger"'),
        ("/console/mcp", 'id="mcp-url"'),
    ):
        page = await client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert marker in page.text, path
        assert KEY_TOKEN.search(page.text) is None, path


async def test_a_created_key_is_shown_once_and_works(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    csrf = await console_sign_in(client, customer.key)
    created = await client.post(
        "/console/keys", data={"name": "laptop", "scopes": ["tasks:read"], "csrf_token": csrf}
    )
    assert created.status_code == 200, created.text
    [shown] = KEY_TOKEN.findall(created.text)
    assert shown != customer.key
    assert created.headers["cache-control"] == "no-store"
    again = await client.get("/console/keys")
    assert shown not in again.text and KEY_TOKEN.search(again.text) is None
    assert "laptop" in again.text
    # It is a real key, of the same account, with the scopes picked.
    account = await client.get("/api/v1/account", headers={"Authorization": f"Bearer {shown}"})
    assert account.json()["data"]["id"] == customer.account.id
    [new] = [k for k in await _keys(runtime, customer.account.id) if k.name == "laptop"]
    assert new.scopes == "tasks:read" and new.prefix == shown[:11]


async def test_key_forms_say_what_is_wrong(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    csrf = await console_sign_in(client, customer.key)
    for data, status, text in (
        ({"name": "x"}, 400, "scopes: pick at least one scope"),
        ({"name": "  ", "scopes": ["tasks:read"]}, 400, "name: String should have at least 1"),
        ({"name": "x", "scopes": ["root"]}, 400, "scopes: Input should be"),
    ):
        answer = await client.post("/console/keys", data={**data, "csrf_token": csrf})
        assert answer.status_code == status, answer.text
        assert text in answer.text
        assert 'id="keys"' in answer.text  # the keys page, with its message
    assert len(await _keys(runtime, customer.account.id)) == 1


async def test_a_key_cannot_make_or_manage_keys_beyond_its_scopes(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    reader = await make_customer(runtime, scopes=["tasks:read", "keys:manage"])
    csrf = await console_sign_in(client, reader.key)
    answer = await client.post(
        "/console/keys", data={"name": "x", "scopes": ["tasks:create"], "csrf_token": csrf}
    )
    assert answer.status_code == 403
    assert "a key cannot grant scopes it lacks: tasks:create" in answer.text
    outsider = await make_customer(runtime, scopes=["tasks:read"])
    client.cookies.clear()
    await console_sign_in(client, outsider.key)
    page = await client.get("/console/keys")
    assert page.status_code == 403
    assert "this API key lacks the scope keys:manage" in page.text
    webhooks = await client.get("/console/webhooks")  # deliveries still readable
    assert webhooks.status_code == 200
    assert "this API key lacks the scope keys:manage" in webhooks.text


async def test_revoking_a_key_needs_csrf_and_stops_it(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    other = await make_customer(runtime)
    csrf = await console_sign_in(client, customer.key)
    created = await client.post(
        "/console/keys", data={"name": "ci", "scopes": ["tasks:read"], "csrf_token": csrf}
    )
    [plain] = KEY_TOKEN.findall(created.text)
    [key] = [k for k in await _keys(runtime, customer.account.id) if k.name == "ci"]
    refused = await client.post(f"/console/keys/{key.id}/revoke")
    assert refused.status_code == 403 and "invalid or missing CSRF token" in refused.text
    assert not next(k for k in await _keys(runtime, customer.account.id) if k.id == key.id).disabled
    # Another account's key is not found from here.
    [foreign] = await _keys(runtime, other.account.id)
    missing = await client.post(f"/console/keys/{foreign.id}/revoke", data={"csrf_token": csrf})
    assert missing.status_code == 404 and "key not found" in missing.text
    revoked = await client.post(f"/console/keys/{key.id}/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 303
    page = await client.get(revoked.headers["location"])
    assert f"Key {key.prefix}… revoked." in page.text
    answer = await client.get("/api/v1/account", headers={"Authorization": f"Bearer {plain}"})
    assert answer.status_code == 401


async def test_rolling_the_webhook_secret(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    csrf = await console_sign_in(client, customer.key)
    page = await client.get("/console/webhooks")
    before = await _secret(runtime, customer.account.id)
    assert before and before in page.text
    refused = await client.post("/console/webhooks/roll")
    assert refused.status_code == 403
    assert await _secret(runtime, customer.account.id) == before
    rolled = await client.post("/console/webhooks/roll", data={"csrf_token": csrf})
    assert rolled.status_code == 303
    after = await _secret(runtime, customer.account.id)
    assert after and after != before
    page = await client.get(rolled.headers["location"])
    assert after in page.text and "previous one keeps signing for 24 hours" in page.text


async def test_deliveries_with_attempts_and_redelivery(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    csrf = await console_sign_in(client, customer.key)
    with receiving() as receiver:
        task_id = await create_task(client, customer, receiver.url + "/hook")
        first = await settled_delivery(client, customer, task_id)
        page = await client.get("/console/webhooks")
        assert first["id"] in page.text and receiver.url + "/hook" in page.text
        assert "delivered" in page.text
        refused = await client.post("/console/webhooks/redeliver", data={"task_id": task_id})
        assert refused.status_code == 403
        assert len(receiver.on("/hook")) == 1
        again = await client.post(
            "/console/webhooks/redeliver", data={"task_id": task_id, "csrf_token": csrf}
        )
        assert again.status_code == 303
        await eventually(
            lambda: _received(receiver, 2), within_s=30, what="the redelivered callback"
        )
        ids = [r.headers["webhook-id"] for r in receiver.on("/hook")]
    assert ids[0] == first["id"] and ids[1] != first["id"]
    listed = await client.get("/console/webhooks")
    assert ids[1] in listed.text
    missing = await client.post(
        "/console/webhooks/redeliver", data={"task_id": "task_nope", "csrf_token": csrf}
    )
    assert missing.status_code == 404 and "task not found" in missing.text


async def _received(receiver: Receiver, count: int) -> bool:
    return len(receiver.on("/hook")) >= count


async def test_ledger_pages_newest_first(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    async with runtime.sessions() as session:
        for number in range(60):
            await grant_credits(
                session, account_id=customer.account.id, amount=1, note=f"grant-{number}"
            )
        await session.commit()
    await console_sign_in(client, customer.key)
    first = await client.get("/console/ledger")
    notes = re.findall(r"grant-(\d+)", first.text)
    assert notes[:2] == ["59", "58"] and len(notes) == 50
    older = re.search(r'href="(/console/ledger\?cursor=\d+)"', first.text)
    assert older
    second = await client.get(older.group(1))
    notes = re.findall(r"grant-(\d+)", second.text)
    assert notes == [str(n) for n in range(9, -1, -1)]
    assert 'href="/console/ledger"' in second.text  # back to the newest
    bad = await client.get("/console/ledger", params={"cursor": "x"})
    assert bad.status_code == 400 and "cursor" in bad.text


async def test_connect_mcp_shows_configuration_with_placeholders(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    await console_sign_in(client, customer.key)
    page = await client.get("/console/mcp")
    url = "http://testserver/api/mcp"
    assert f'<code id="mcp-url">{url}</code>' in page.text
    assert "Bearer &lt;your API key&gt;" in page.text
    assert (
        f"npx mcp-remote {url} --header &#34;Authorization: Bearer ${{GENGATE_API_KEY}}&#34;"
        in page.text
    )
    assert KEY_TOKEN.search(page.text) is None


async def test_overview_charts_todays_credits(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    task_id = await create_task(client, customer, None)
    await wait_for_terminal(client, customer.headers, task_id)
    await console_sign_in(client, customer.key)
    page = await client.get("/console")
    assert 'id="balance">996<' in page.text and 'id="used-total">4<' in page.text
    days = re.findall(r'data-day="([0-9-]+)" data-used="(-?\d+)"', page.text)
    assert len(days) == 30
    assert days[-1][1] == "4" and {used for _day, used in days[:-1]} == {"0"}
    assert "4 max" in page.text
