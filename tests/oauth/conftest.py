"""A real server per OAuth test module, and the steps of the authorization code flow over
plain HTTP (registration, /authorize, consent, /token) for the protocol-level tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from mcp.client.auth.oauth2 import PKCEParameters
from sqlalchemy import update

from app.db.engine import create_engine, create_session_factory, transaction
from app.keys.service import hash_key
from app.oauth.models import GrantToken
from tests.conftest import Customer
from tests.faults.conftest import mcp_call as call_tool_over_http
from tests.support.console import ConsoleServer, console_serving, console_sign_in, csrf_of
from tests.support.server import free_port

SCOPES = "tasks:read tasks:create"
_CHECKBOX = re.compile(r'name="scope" value="([^"]+)"')


@pytest.fixture(scope="package")
def oauth_server(
    template_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleServer]:
    """One server for the OAuth tests (each test makes its own customers and clients)."""
    with console_serving(template_database_url, tmp_path_factory.mktemp("oauth")) as server:
        yield server


async def new_customer(server: ConsoleServer, **kwargs: Any) -> Customer:
    return await asyncio.to_thread(server.customer, **kwargs)


async def expire_tokens(server: ConsoleServer, *tokens: str) -> None:
    """Move the tokens' expiry into the past, as time passing would."""
    engine = create_engine(server.database_url, pool_size=1)
    try:
        async with transaction(create_session_factory(engine)) as session:
            await session.execute(
                update(GrantToken)
                .where(GrantToken.id.in_([hash_key(t) for t in tokens]))  # type: ignore[attr-defined]
                .values(expires_at=0)
            )
    finally:
        await engine.dispose()


def callback_uri() -> str:
    """A loopback redirect URI where nothing listens (tests read the Location header)."""
    return f"http://127.0.0.1:{free_port()}/callback"


@dataclass
class Registered:
    client_id: str
    redirect_uri: str
    answer: dict[str, Any]


@dataclass
class Authorization:
    """One run of /authorize up to the code."""

    client: Registered
    pkce: PKCEParameters
    state: str
    code: str


async def register(
    http: httpx.AsyncClient, *, name: str = "Protocol Test", **metadata: Any
) -> Registered:
    redirect = callback_uri()
    body = {"client_name": name, "redirect_uris": [redirect], **metadata}
    answer = await http.post("/register", json=body)
    assert answer.status_code == 201, answer.text
    data = answer.json()
    return Registered(data["client_id"], redirect, data)


async def start_authorization(
    http: httpx.AsyncClient,
    client: Registered,
    pkce: PKCEParameters,
    *,
    state: str = "st-1",
    **extra: str,
) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_uri,
        "code_challenge": pkce.code_challenge,
        "code_challenge_method": "S256",
        "state": state,
        "resource": str(http.base_url).rstrip("/") + "/api/mcp",
        "scope": SCOPES,
        **extra,
    }
    return await http.get("/authorize", params=params)


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def authorize(
    http: httpx.AsyncClient,
    customer: Customer,
    *,
    scopes: list[str] | None = None,
    resource: str | None = None,
) -> Authorization:
    """Register a client and take it through /authorize and the consent page (signed in
    over HTTP with the customer's key) to a code."""
    client = await register(http)
    pkce = PKCEParameters.generate()
    extra = {"resource": resource} if resource else {}
    started = await start_authorization(http, client, pkce, **extra)
    assert started.status_code == 302, started.text
    consent = started.headers["location"]
    assert consent.startswith("/console/oauth/consent?request=")
    if http.cookies.get("gengate_console") is None:
        await console_sign_in(http, customer.key)
    page = await http.get(consent)
    assert page.status_code == 200, page.text
    csrf = csrf_of(page.text)
    chosen = _CHECKBOX.findall(page.text) if scopes is None else scopes
    answer = await http.post(
        "/console/oauth/consent",
        data={
            "csrf_token": csrf,
            "request": query_of(consent)["request"],
            "decision": "approve",
            "scope": chosen,
        },
    )
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith(client.redirect_uri + "?")
    query = query_of(location)
    assert query["state"] == "st-1"
    return Authorization(client, pkce, "st-1", query["code"])


async def exchange(
    http: httpx.AsyncClient, flow: Authorization, *, verifier: str | None = None
) -> httpx.Response:
    return await http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": flow.code,
            "redirect_uri": flow.client.redirect_uri,
            "client_id": flow.client.client_id,
            "code_verifier": verifier or flow.pkce.code_verifier,
            "resource": str(http.base_url).rstrip("/") + "/api/mcp",
        },
    )


async def refresh(http: httpx.AsyncClient, client_id: str, refresh_token: str) -> httpx.Response:
    return await http.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
        },
    )


@dataclass(frozen=True)
class Bearer:
    """A token where the MCP test helpers take a customer: they read only its headers."""

    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def mcp_call(
    http: httpx.AsyncClient, token: str, tool: str, arguments: dict[str, Any]
) -> httpx.Response:
    """One tools/call the way curl makes it, with an OAuth token as the bearer."""
    return await call_tool_over_http(http, Bearer(token), tool, arguments)  # type: ignore[arg-type]
