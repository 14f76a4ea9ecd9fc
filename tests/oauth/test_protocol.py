"""OAuth for MCP at the protocol level, over plain HTTP against a real server: metadata,
registration, the code flow with PKCE, rotation, revocation, and every refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from mcp.client.auth.oauth2 import PKCEParameters

from app.core.config import Settings, TierLimits
from tests.conftest import make_customer
from tests.oauth.conftest import (
    authorize,
    callback_uri,
    exchange,
    expire_tokens,
    mcp_call,
    new_customer,
    query_of,
    refresh,
    register,
    start_authorization,
)
from tests.support.apps import running_app, runtime_of
from tests.support.console import ConsoleServer, csrf_of

MODEL = "gpt-image-2-text-to-image"


@pytest.fixture
async def http(oauth_server: ConsoleServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=oauth_server.base_url, timeout=30) as client:
        yield client


async def _tokens(http: httpx.AsyncClient, oauth_server: ConsoleServer) -> dict[str, str]:
    flow = await authorize(http, await new_customer(oauth_server))
    answer = await exchange(http, flow)
    assert answer.status_code == 200, answer.text
    tokens: dict[str, str] = answer.json()
    tokens["client_id"] = flow.client.client_id
    return tokens


async def test_metadata_and_the_401_challenge_point_at_each_other(
    http: httpx.AsyncClient, oauth_server: ConsoleServer
) -> None:
    base = oauth_server.base_url
    refused = await http.post("/api/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    resource_metadata = f"{base}/.well-known/oauth-protected-resource/api/mcp"
    assert f'resource_metadata="{resource_metadata}"' in challenge
    assert "error=" not in challenge  # no credential, no error code (RFC 6750)
    for path in (
        "/.well-known/oauth-protected-resource/api/mcp",
        "/.well-known/oauth-protected-resource",
    ):
        prm = (await http.get(path)).json()
        assert prm["resource"] == f"{base}/api/mcp"
        assert prm["authorization_servers"] == [base]
        assert prm["scopes_supported"] == ["tasks:read", "tasks:create"]
    server = (await http.get("/.well-known/oauth-authorization-server")).json()
    assert server["issuer"] == base
    assert server["authorization_endpoint"] == f"{base}/authorize"
    assert server["token_endpoint"] == f"{base}/token"
    assert server["registration_endpoint"] == f"{base}/register"
    assert server["revocation_endpoint"] == f"{base}/revoke"
    assert server["code_challenge_methods_supported"] == ["S256"]
    assert server["token_endpoint_auth_methods_supported"] == ["none"]
    # Reached by another name, the server describes itself by that name (no public URL set).
    other = base.replace("127.0.0.1", "localhost")
    async with httpx.AsyncClient(base_url=other) as by_name:
        assert (await by_name.get("/.well-known/oauth-authorization-server")).json()[
            "issuer"
        ] == other


async def test_registration_makes_public_clients_and_refuses_unsafe_redirects(
    http: httpx.AsyncClient,
) -> None:
    client = await register(http, token_endpoint_auth_method="client_secret_post")
    assert client.answer["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in client.answer
    for bad in ("http://attacker.example/cb", "javascript:alert(1)"):
        answer = await http.post("/register", json={"redirect_uris": [bad]})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] in ("invalid_redirect_uri", "invalid_client_metadata")
    answer = await http.post(
        "/register", json={"redirect_uris": [callback_uri()], "scope": "keys:manage"}
    )
    assert answer.status_code == 400 and "keys:manage" in answer.json()["error_description"]


async def test_code_flow_tool_call_charges_the_approving_keys_account(
    http: httpx.AsyncClient, oauth_server: ConsoleServer
) -> None:
    payer, bystander = await new_customer(oauth_server), await new_customer(oauth_server)
    flow = await authorize(http, payer)
    tokens = (await exchange(http, flow)).json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["scope"] == "tasks:read tasks:create"
    created = await mcp_call(
        http, tokens["access_token"], "generate_image", {"model": MODEL, "prompt": "a fox"}
    )
    assert created.status_code == 200, created.text
    result = created.json()["result"]
    assert not result.get("isError"), result
    task_id = result["structuredContent"]["taskId"]
    async with httpx.AsyncClient(base_url=oauth_server.base_url) as rest:
        seen = await rest.get(f"/api/v1/jobs/recordInfo?taskId={task_id}", headers=payer.headers)
        assert seen.status_code == 200
        assert (
            await rest.get(f"/api/v1/jobs/recordInfo?taskId={task_id}", headers=bystander.headers)
        ).status_code == 404
        payer_account = (await rest.get("/api/v1/account", headers=payer.headers)).json()["data"]
        bystander_account = (await rest.get("/api/v1/account", headers=bystander.headers)).json()[
            "data"
        ]
    assert payer_account["balance"] < 1000
    assert bystander_account["balance"] == 1000
    # OAuth tokens are for the MCP endpoint only.
    async with httpx.AsyncClient(base_url=oauth_server.base_url) as rest:
        answer = await rest.get(
            "/api/v1/account", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
    assert answer.status_code == 401


async def test_scopes_picked_on_the_consent_page_bound_the_token(
    http: httpx.AsyncClient, oauth_server: ConsoleServer
) -> None:
    flow = await authorize(http, await new_customer(oauth_server), scopes=["tasks:read"])
    tokens = (await exchange(http, flow)).json()
    assert tokens["scope"] == "tasks:read"
    refused = (
        await mcp_call(
            http, tokens["access_token"], "generate_image", {"model": MODEL, "prompt": "x"}
        )
    ).json()
    assert refused["result"]["isError"] is True
    assert "tasks:create" in str(refused["result"]["structuredContent"])
    listed = (await mcp_call(http, tokens["access_token"], "list_tasks", {})).json()
    assert not listed["result"].get("isError"), listed


async def test_wrong_verifier_and_reused_code_are_refused(
    http: httpx.AsyncClient, oauth_server: ConsoleServer
) -> None:
    flow = await authorize(http, await new_customer(oauth_server))
    wrong = await exchange(http, flow, verifier=PKCEParameters.generate().code_verifier)
    assert wrong.status_code == 400
    assert wrong.json() == {
        "error": "invalid_grant",
        "error_description": "incorrect code_verifier",
    }
    first = await exchange(http, flow)
    assert first.status_code == 200, first.text
    again = await exchange(http, flow)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # A replayed code revokes what it issued (RFC 6749 4.1.2).
    late = await mcp_call(http, first.json()["access_token"], "get_account", {})
    assert late.status_code == 401


async def test_expired_access_token_is_refused_and_refresh_rotates(
    http: httpx.AsyncClient, oauth_server: ConsoleServer
) -> None:
    tokens = await _tokens(http, oauth_server)
    assert (await mcp_call(http, tokens["access_token"], "get_account", {})).status_code == 200
    await expire_tokens(oauth_server, tokens["access_token"])
    expired = await mcp_call(http, tokens["access_token"], "get_account", {})
    assert expired.status_code == 401
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    assert expired.json()["reason"] == "access token expired"
    rotated = await refresh(http, tokens["client_id"], tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    fresh = rotated.json()
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert (await mcp_call(http, fresh["access_token"], "get_account", {})).status_code == 200
    # The old refresh token comes back: refused, and the whole grant ends.
    reused = await refresh(http, tokens["client_id"], tokens["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert (await mcp_call(http, fresh["access_token"], "get_account", {})).status_code == 401
    assert (await refresh(http, tokens["client_id"], fresh["refresh_token"])).status_code == 400


async def test_a_token_for_another_audience_is_refused(
    http: httpx.AsyncClient, oauth_server: ConsoleServer
) -> None:
    tokens = await _tokens(http, oauth_server)
    # The same server under another name is another resource (no public URL configured).
    other = oauth_server.base_url.replace("127.0.0.1", "localhost")
    async with httpx.AsyncClient(base_url=other) as elsewhere:
        refused = await mcp_call(elsewhere, tokens["access_token"], "get_account", {})
    assert refused.status_code == 401
    assert "not for this resource" in refused.json()["reason"]
    # Asking for a code for a resource this server does not serve.
    client = await register(http)
    answer = await start_authorization(
        http, client, PKCEParameters.generate(), resource="https://other.example/api/mcp"
    )
    assert answer.status_code == 302
    assert query_of(answer.headers["location"])["error"] == "invalid_target"


async def test_unregistered_redirect_uri_is_refused_without_a_redirect(
    http: httpx.AsyncClient,
) -> None:
    client = await register(http)
    answer = await start_authorization(
        http, client, PKCEParameters.generate(), redirect_uri="http://127.0.0.1:1/elsewhere"
    )
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert answer.json()["error"] == "invalid_request"
    assert "not registered" in answer.json()["error_description"]


async def test_revocation_and_key_revocation_end_the_tokens(
    http: httpx.AsyncClient, oauth_server: ConsoleServer
) -> None:
    tokens = await _tokens(http, oauth_server)
    revoked = await http.post(
        "/revoke",
        data={
            "token": tokens["access_token"],
            "client_id": tokens["client_id"],
        },
    )
    assert revoked.status_code == 200, revoked.text
    assert (await mcp_call(http, tokens["access_token"], "get_account", {})).status_code == 401
    assert (await refresh(http, tokens["client_id"], tokens["refresh_token"])).status_code == 400

    customer = await new_customer(oauth_server)
    async with httpx.AsyncClient(base_url=oauth_server.base_url, timeout=30) as other:
        flow = await authorize(other, customer)
        live = (await exchange(other, flow)).json()
        assert (await mcp_call(other, live["access_token"], "get_account", {})).status_code == 200
        keys = (await other.get("/api/v1/keys", headers=customer.headers)).json()["data"]
        key_id = keys[0]["id"] if isinstance(keys, list) else keys["keys"][0]["id"]
        gone = await other.delete(f"/api/v1/keys/{key_id}", headers=customer.headers)
        assert gone.status_code == 200, gone.text
        refused = await mcp_call(other, live["access_token"], "get_account", {})
        assert refused.status_code == 401
        assert (
            await refresh(other, flow.client.client_id, live["refresh_token"])
        ).status_code == 400


async def test_consent_needs_a_session_and_a_csrf_token_and_deny_says_access_denied(
    http: httpx.AsyncClient, oauth_server: ConsoleServer
) -> None:
    client = await register(http)
    started = await start_authorization(http, client, PKCEParameters.generate(), state="s-9")
    consent = started.headers["location"]
    page = await http.get(consent)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/console/login?next=/console/oauth/consent")
    customer = await new_customer(oauth_server)
    login = await http.get(page.headers["location"])
    signed_in = await http.post(
        "/console/login",
        data={
            "api_key": customer.key,
            "csrf_token": csrf_of(login.text),
            "next": query_of(page.headers["location"])["next"],
        },
    )
    assert signed_in.status_code == 303 and signed_in.headers["location"] == consent
    shown = await http.get(consent)
    assert "Protocol Test" in shown.text and "127.0.0.1:" in shown.text
    assert customer.key not in shown.text
    request_id = query_of(consent)["request"]
    no_csrf = await http.post(
        "/console/oauth/consent",
        data={"request": request_id, "decision": "approve", "scope": "tasks:read"},
    )
    assert no_csrf.status_code == 403
    denied = await http.post(
        "/console/oauth/consent",
        data={"request": request_id, "decision": "deny", "csrf_token": csrf_of(shown.text)},
    )
    assert denied.status_code == 303
    query = query_of(denied.headers["location"])
    assert query["error"] == "access_denied" and query["state"] == "s-9"
    # The request is gone once decided.
    assert (await http.get(consent)).status_code == 404


async def test_bad_input_gets_a_4xx_naming_what_is_wrong(
    http: httpx.AsyncClient, oauth_server: ConsoleServer
) -> None:
    no_client = await http.post("/token", data={"grant_type": "authorization_code"})
    assert no_client.status_code == 401 and no_client.json()["error"] == "invalid_client"
    not_json = await http.post("/register", content=b"{not json")
    assert not_json.status_code == 400 and not_json.json()["error"] == "invalid_client_metadata"
    bare = await http.get("/authorize")
    assert bare.status_code == 400 and "client_id" in bare.json()["error_description"]
    client = await register(http)
    plain = await start_authorization(
        http, client, PKCEParameters.generate(), code_challenge_method="plain"
    )
    assert plain.status_code == 302
    assert query_of(plain.headers["location"])["error"] == "invalid_request"
    long_challenge = PKCEParameters.generate().model_copy(update={"code_challenge": "x" * 500})
    refused = await start_authorization(http, client, long_challenge)
    assert refused.status_code == 302
    refusal = query_of(refused.headers["location"])
    assert (
        refusal["error"] == "invalid_request" and "code_challenge" in refusal["error_description"]
    )
    huge = await http.post("/token", content=b"x" * (5 << 20))
    assert huge.status_code == 413
    flow = await authorize(http, await new_customer(oauth_server))
    garbage = await http.post(
        "/token",
        data={"grant_type": "password", "client_id": flow.client.client_id},
    )
    assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_request"
    unknown = await http.get("/console/oauth/consent?request=nonsense")
    assert unknown.status_code == 404
    assert "authorization request not found or expired" in unknown.text
    assert unknown.headers["content-type"].startswith("text/html")
    undecided = await http.post(
        "/console/oauth/consent",
        data={"request": "nonsense", "decision": "maybe", "csrf_token": csrf_of(unknown.text)},
    )
    assert 400 <= undecided.status_code < 500 and "decision" in undecided.text


async def test_a_public_url_decides_issuer_resource_and_audience(settings: Settings) -> None:
    public = "https://gen.example.com"
    async with running_app(settings.model_copy(update={"public_url": public})) as (app, http):
        server = (await http.get("/.well-known/oauth-authorization-server")).json()
        assert server["issuer"] == public and server["token_endpoint"] == f"{public}/token"
        prm = (await http.get("/.well-known/oauth-protected-resource/api/mcp")).json()
        assert prm["resource"] == f"{public}/api/mcp"
        refused = await mcp_call(http, "gga_unknown", "get_account", {})
        assert refused.status_code == 401
        assert (
            f'resource_metadata="{public}/.well-known/oauth-protected-resource/api/mcp"'
            in refused.headers["www-authenticate"]
        )
        customer = await make_customer(runtime_of(app))
        flow = await authorize(http, customer, resource=f"{public}/api/mcp")
        tokens = (await exchange(http, flow)).json()
        # Reached as http://testserver, the server still is the public URL's resource.
        account = await mcp_call(http, tokens["access_token"], "get_account", {})
        assert account.status_code == 200, account.text
        assert not account.json()["result"].get("isError")


async def test_an_oauth_token_shares_its_keys_rate_limit(settings: Settings) -> None:
    tight = {"tight": TierLimits(create_per_minute=3, query_per_minute=100, max_active_tasks=100)}
    limited = settings.model_copy(update={"tiers": tight, "workers_in_process": False})
    async with running_app(limited) as (app, http):
        customer = await make_customer(runtime_of(app), tier="tight")
        flow = await authorize(http, customer)
        token = (await exchange(http, flow)).json()["access_token"]
        arguments = {"model": MODEL, "prompt": "a kite"}
        for _ in range(2):  # two of the three creates a minute, spent with the key itself
            created = await http.post(
                "/api/v1/jobs/createTask",
                json={"model": MODEL, "input": {"prompt": "a kite"}},
                headers=customer.headers,
            )
            assert created.status_code == 200, created.text
        third = (await mcp_call(http, token, "generate_image", arguments)).json()["result"]
        assert not third.get("isError"), third
        fourth = (await mcp_call(http, token, "generate_image", arguments)).json()["result"]
    assert fourth["isError"] is True
    refusal = fourth["structuredContent"]
    assert refusal["error"] == "rate limit exceeded" and refusal["tier"] == "tight", refusal
