"""End to end: the `mcp` SDK's OAuth client on its streamable HTTP client, against a real
server, with the consent given in a real headless Chromium (sign in with an API key, pick
scopes, approve). Then a tool call charged to that key's account, a refresh the SDK makes
by itself (rotation), and revocation."""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import urlsplit

import httpx
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from tests.oauth.conftest import (
    callback_uri,
    expire_tokens,
    mcp_call,
    new_customer,
    query_of,
    refresh,
)
from tests.support.browser import chromium, snap
from tests.support.console import ConsoleServer


class MemoryStorage:
    """Where an MCP client keeps its registration and tokens (here: in memory)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def consent_in_browser(
    authorize_url: str, *, api_key: str, redirect_uri: str, uncheck: list[str], shots: str
) -> str:
    """Open the authorization URL as a person would, sign in to the console with the key,
    leave out `uncheck`, approve; returns the URL the browser was sent back to."""
    returned: list[str] = []
    with chromium() as browser:
        page = browser.new_context().new_page()

        def arrive(route):  # type: ignore[no-untyped-def]
            returned.append(route.request.url)
            route.fulfill(status=200, content_type="text/plain", body="back in the client")

        page.route(re.compile(re.escape(redirect_uri) + r"\?.*"), arrive)
        page.goto(authorize_url)
        page.wait_for_selector("input[name=api_key]")
        assert "/console/login?next=/console/oauth/consent" in page.url
        snap(page, f"{shots}-sign-in")
        page.fill("input[name=api_key]", api_key)
        page.click("form[action='/console/login'] button[type=submit]")
        page.wait_for_selector("section.consent")
        assert page.inner_text(".client-name") == "Desk Test"
        assert page.inner_text(".redirect-host") == urlsplit(redirect_uri).netloc
        assert api_key not in page.content()
        for scope in uncheck:
            page.uncheck(f"input[name=scope][value='{scope}']")
        snap(page, f"{shots}-consent")
        page.click("button[value=approve]")
        page.wait_for_url(re.compile(re.escape(redirect_uri) + r"\?.*"))
    assert len(returned) == 1
    return returned[0]


def oauth_client(
    server_url: str, storage: MemoryStorage, *, api_key: str, uncheck: list[str], shots: str
) -> OAuthClientProvider:
    redirect = callback_uri()
    arrived: list[str] = []

    async def redirect_handler(authorize_url: str) -> None:
        arrived.append(
            await asyncio.to_thread(
                consent_in_browser,
                authorize_url,
                api_key=api_key,
                redirect_uri=redirect,
                uncheck=uncheck,
                shots=shots,
            )
        )

    async def callback_handler() -> AuthorizationCodeResult:
        query = query_of(arrived.pop())
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"))

    return OAuthClientProvider(
        server_url=server_url,
        client_metadata=OAuthClientMetadata(client_name="Desk Test", redirect_uris=[redirect]),  # type: ignore[list-item]
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )


async def test_sdk_client_signs_in_through_the_console_and_is_charged_as_the_key(
    oauth_server: ConsoleServer,
) -> None:
    """Signed in over the 2025 handshake protocol; the tokens then serve the stateless
    2026-07-28 protocol too, where the SDK refreshes them by itself."""
    payer = await new_customer(oauth_server, tier="pro")
    bystander = await new_customer(oauth_server)
    url = oauth_server.base_url + "/api/mcp"
    storage = MemoryStorage()
    auth = oauth_client(url, storage, api_key=payer.key, uncheck=[], shots="oauth")
    async with (
        create_mcp_http_client(auth=auth) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,  # type: ignore[arg-type]
    ):
        created = await client.call_tool(
            "generate_image", {"model": "gpt-image-2-text-to-image", "prompt": "a lighthouse"}
        )
        assert created.is_error is False and created.structured_content is not None, created
        task_id = created.structured_content["taskId"]
        first = storage.tokens
        assert (
            first is not None and first.refresh_token and first.scope == "tasks:read tasks:create"
        )
        assert storage.client_info is not None
        assert storage.client_info.token_endpoint_auth_method == "none"

    async with (
        create_mcp_http_client(auth=auth) as http,
        Client(streamable_http_client(url, http_client=http), mode="2026-07-28") as client,  # type: ignore[arg-type]
    ):
        # The access token's hour is up: the SDK refreshes by itself and gets a new pair.
        await expire_tokens(oauth_server, first.access_token)
        auth.context.token_expiry_time = time.time() - 1
        account = await client.call_tool("get_account", {})
        assert account.is_error is False and account.structured_content is not None
        rotated = storage.tokens
        assert rotated is not None and rotated.access_token != first.access_token
        assert rotated.refresh_token != first.refresh_token

    async with httpx.AsyncClient(base_url=oauth_server.base_url, timeout=30) as rest:
        seen = await rest.get(f"/api/v1/jobs/recordInfo?taskId={task_id}", headers=payer.headers)
        assert seen.status_code == 200, seen.text
        paid = (await rest.get("/api/v1/account", headers=payer.headers)).json()["data"]
        untouched = (await rest.get("/api/v1/account", headers=bystander.headers)).json()["data"]
        assert account.structured_content["balance"] == paid["balance"] < 1000
        assert untouched["balance"] == 1000
        assert paid["tier"] == "pro"

        # The old access token died with the rotation; the new one works until revoked.
        assert (await mcp_call(rest, first.access_token, "get_account", {})).status_code == 401
        assert (await mcp_call(rest, rotated.access_token, "get_account", {})).status_code == 200
        client_id = storage.client_info.client_id
        revoked = await rest.post(
            "/revoke",
            data={"token": rotated.refresh_token, "client_id": client_id},
        )
        assert revoked.status_code == 200, revoked.text
        assert (await mcp_call(rest, rotated.access_token, "get_account", {})).status_code == 401
        assert rotated.refresh_token
        assert (await refresh(rest, client_id, rotated.refresh_token)).status_code == 400


async def test_scopes_left_out_in_the_browser_are_not_granted(oauth_server: ConsoleServer) -> None:
    reader = await new_customer(oauth_server)
    url = oauth_server.base_url + "/api/mcp"
    storage = MemoryStorage()
    auth = oauth_client(
        url, storage, api_key=reader.key, uncheck=["tasks:create"], shots="oauth-read-only"
    )
    async with (
        create_mcp_http_client(auth=auth) as http,
        Client(streamable_http_client(url, http_client=http)) as client,  # type: ignore[arg-type]
    ):
        refused = await client.call_tool(
            "generate_image", {"model": "gpt-image-2-text-to-image", "prompt": "x"}
        )
        listed = await client.call_tool("list_tasks", {})
    assert storage.tokens is not None and storage.tokens.scope == "tasks:read"
    assert refused.is_error is True and "tasks:create" in str(refused.structured_content)
    assert listed.is_error is False
