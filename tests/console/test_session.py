"""Console sign-in, sessions and CSRF, in process (the browser tests drive the same pages)."""

from __future__ import annotations

import hashlib

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update

from app.console.models import ConsoleSession
from app.keys.service import revoke_api_key
from app.runtime import Runtime
from tests.conftest import Customer
from tests.support.console import console_cookie, console_sign_in, csrf_of


async def _sessions(runtime: Runtime) -> list[ConsoleSession]:
    async with runtime.sessions() as session:
        return list((await session.execute(select(ConsoleSession))).scalars())


async def test_sign_in_exchanges_the_key_for_a_session_cookie(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    login = await client.get("/console/login", params={"next": "/console?x=1"})
    assert login.status_code == 200
    assert login.headers["cache-control"] == "no-store"
    answer = await client.post(
        "/console/login",
        data={"api_key": customer.key, "csrf_token": csrf_of(login.text), "next": "/console?x=1"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console?x=1"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("gengate_console=")
    )
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/"} <= attributes
    assert "secure" not in attributes  # GENGATE_ENV=test: plain HTTP on loopback
    assert customer.key not in answer.text and customer.key not in answer.headers["location"]
    # The table holds the token's hash and the key's id, never the key.
    [row] = await _sessions(runtime)
    assert row.id == hashlib.sha256(console_cookie(client).encode()).hexdigest()
    assert customer.key not in repr(row.model_dump())
    home = await client.get("/console")
    assert home.status_code == 200
    assert customer.key not in home.text
    assert 'id="balance">1,000<' in home.text


async def test_a_wrong_key_gets_the_sign_in_page_with_the_reason(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    wrong = "sk_" + "x" * 43
    for key, reason in ((wrong, "unknown API key"), ("hunter2", "invalid API key format")):
        login = await client.get("/console/login")
        answer = await client.post(
            "/console/login", data={"api_key": key, "csrf_token": csrf_of(login.text)}
        )
        assert answer.status_code == 401
        assert f"Sign-in failed: {reason}." in answer.text
        assert key not in answer.text  # not echoed back into the form
    async with runtime.sessions() as session:
        await revoke_api_key(session, key_id=await _key_id(runtime, customer))
        await session.commit()
    login = await client.get("/console/login")
    answer = await client.post(
        "/console/login", data={"api_key": customer.key, "csrf_token": csrf_of(login.text)}
    )
    assert answer.status_code == 401
    assert "Sign-in failed: API key is disabled." in answer.text
    assert await _sessions(runtime) == []


async def _key_id(runtime: Runtime, customer: Customer) -> str:
    from app.keys.service import list_api_keys

    async with runtime.sessions() as session:
        [key] = await list_api_keys(session, account_id=customer.account.id)
    return key.id


async def test_sign_in_without_a_csrf_token_is_refused(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    await client.get("/console/login")  # the pre-session cookie alone is not enough
    for data in ({"api_key": customer.key}, {"api_key": customer.key, "csrf_token": "forged"}):
        answer = await client.post("/console/login", data=data)
        assert answer.status_code == 403
        assert answer.headers["content-type"].startswith("text/html")
        assert "invalid or missing CSRF token" in answer.text
    assert await _sessions(runtime) == []


async def test_pages_send_a_stranger_to_sign_in_and_back(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    answer = await client.get("/console", params={"tab": "a b"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?next=/console%3Ftab%3Da%2Bb"
    htmx = await client.get("/console", headers={"HX-Request": "true"})
    assert htmx.headers["HX-Redirect"] == "/console/login?next=/console"
    # After signing in, the login page sends a signed-in user on, but only within the site.
    await console_sign_in(client, customer.key)
    for target, landing in (
        ("/console/keys", "/console/keys"),
        ("//evil.example/x", "/console"),
        ("https://evil.example/", "/console"),
        ("/\\evil.example", "/console"),
    ):
        answer = await client.get("/console/login", params={"next": target})
        assert answer.headers["location"] == landing


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    csrf = await console_sign_in(client, customer.key)
    refused = await client.post("/console/logout", data={"csrf_token": "wrong"})
    assert refused.status_code == 403
    assert "invalid or missing CSRF token" in refused.text
    assert len(await _sessions(runtime)) == 1
    assert (await client.get("/console")).status_code == 200
    # htmx sends the token as a header.
    answer = await client.post("/console/logout", headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login"
    assert await _sessions(runtime) == []
    assert (await client.get("/console")).status_code == 303


async def test_revoking_the_key_ends_its_sessions(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    await console_sign_in(client, customer.key)
    async with runtime.sessions() as session:
        await revoke_api_key(session, key_id=await _key_id(runtime, customer))
        await session.commit()
    assert (await client.get("/console")).status_code == 303
    assert await _sessions(runtime) == []


async def test_an_expired_session_is_over(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    await console_sign_in(client, customer.key)
    async with runtime.sessions() as session:
        await session.execute(update(ConsoleSession).values(expires_at=1))
        await session.commit()
    assert (await client.get("/console")).status_code == 303
    assert await _sessions(runtime) == []


async def test_errors_on_console_pages_are_pages(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    await console_sign_in(client, customer.key)
    missing = await client.get("/console/no-such-page")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "not found" in missing.text
    assert 'href="/console/keys"' in missing.text  # the signed-in layout
    too_long = await client.post(
        "/console/login", data={"api_key": "sk_" + "a" * 300, "csrf_token": "x"}
    )
    assert too_long.status_code == 400
    assert "api_key" in too_long.text and too_long.headers["content-type"].startswith("text/html")
    # The APIs keep their JSON envelope.
    api = await client.get("/api/v1/no-such-route")
    assert api.json()["msg"] == "not found"


async def test_static_files_are_served_offline(client: httpx.AsyncClient) -> None:
    htmx = await client.get("/console/static/htmx.min.js")
    assert htmx.status_code == 200
    assert "htmx" in htmx.text[:2000]
    css = await client.get("/console/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


async def test_cookies_are_secure_outside_development(
    app: FastAPI, customer: Customer, runtime: Runtime
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"env": "production"})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        login = await client.get("/console/login")
        assert "secure" in login.headers["set-cookie"].lower()
        answer = await client.post(
            "/console/login", data={"api_key": customer.key, "csrf_token": csrf_of(login.text)}
        )
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("gengate_console=")
    )
    assert "secure" in cookie.lower()
