import httpx
import pytest

from app.runtime import Runtime
from tests.conftest import Customer, make_customer


async def test_account_shows_balance_tier_and_limits(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    response = await client.get("/api/v1/account", headers=customer.headers)
    assert response.status_code == 200
    body = response.json()
    assert (body["code"], body["msg"]) == (200, "success")
    data = body["data"]
    assert data["balance"] == 1000 and data["tier"] == "standard"
    assert data["limits"] == {
        "createPerMinute": 60,
        "queryPerMinute": 600,
        "maxActiveTasks": 10,
        "windowSeconds": 60,
    }


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Token abc"}, "expected 'Authorization: Bearer sk_...'"),
        ({"Authorization": "Bearer sk_tooshort"}, "invalid API key format"),
        ({"Authorization": "Bearer sk_" + "x" * 43}, "unknown API key"),
    ],
)
async def test_authentication_failures(
    client: httpx.AsyncClient, headers: dict[str, str], reason: str
) -> None:
    response = await client.get("/api/v1/account", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json() == {
        "code": 401,
        "msg": "authentication failed",
        "data": {"error": "authentication failed", "reason": reason},
    }


async def test_key_lifecycle_over_rest(client: httpx.AsyncClient, customer: Customer) -> None:
    created = await client.post(
        "/api/v1/keys", headers=customer.headers, json={"name": "ci", "scopes": ["tasks:read"]}
    )
    assert created.status_code == 200, created.text
    new = created.json()["data"]
    assert new["key"].startswith("sk_") and new["scopes"] == ["tasks:read"]
    assert new["prefix"] == new["key"][:11]

    listed = (await client.get("/api/v1/keys", headers=customer.headers)).json()["data"]
    assert {k["id"] for k in listed} >= {new["id"]}
    assert all("key" not in k and "keyHash" not in k for k in listed)

    # The new key can read the account but lacks keys:manage.
    new_headers = {"Authorization": f"Bearer {new['key']}"}
    assert (await client.get("/api/v1/account", headers=new_headers)).status_code == 200
    denied = await client.get("/api/v1/keys", headers=new_headers)
    assert denied.status_code == 403
    assert denied.json()["data"] == {
        "error": "this API key lacks the scope keys:manage",
        "scope": "keys:manage",
    }

    revoked = await client.delete(f"/api/v1/keys/{new['id']}", headers=customer.headers)
    assert revoked.status_code == 200 and revoked.json()["data"]["disabled"] is True
    after = await client.get("/api/v1/account", headers=new_headers)
    assert after.status_code == 401
    assert after.json()["data"]["reason"] == "API key is disabled"


async def test_keys_of_other_accounts_are_invisible(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    other = await make_customer(runtime)
    theirs = (await client.get("/api/v1/keys", headers=other.headers)).json()["data"][0]
    response = await client.delete(f"/api/v1/keys/{theirs['id']}", headers=customer.headers)
    assert response.status_code == 404 and response.json()["msg"] == "key not found"
    mine = (await client.get("/api/v1/keys", headers=customer.headers)).json()["data"]
    assert theirs["id"] not in {k["id"] for k in mine}


async def test_bad_key_request_names_the_field(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    response = await client.post(
        "/api/v1/keys", headers=customer.headers, json={"name": "x", "scopes": ["root"]}
    )
    assert response.status_code == 400
    data = response.json()["data"]
    assert data["field"] == "scopes.0" and "tasks:read" in data["reason"]
    missing = await client.post("/api/v1/keys", headers=customer.headers, json={})
    assert missing.status_code == 400 and missing.json()["data"]["field"] == "name"


async def test_ledger_pages(client: httpx.AsyncClient, runtime: Runtime) -> None:
    from app.credits.service import grant_credits

    customer = await make_customer(runtime, credits=1)
    async with runtime.sessions() as s:
        for i in range(4):
            await grant_credits(s, account_id=customer.account.id, amount=i + 1)
        await s.commit()
    first = (await client.get("/api/v1/account/ledger?limit=3", headers=customer.headers)).json()[
        "data"
    ]
    assert [e["amount"] for e in first["items"]] == [4, 3, 2] and first["hasMore"] is True
    second = (
        await client.get(
            f"/api/v1/account/ledger?limit=3&cursor={first['nextCursor']}", headers=customer.headers
        )
    ).json()["data"]
    assert [e["amount"] for e in second["items"]] == [1, 1] and second["hasMore"] is False
    assert second["items"][-1]["note"] == "initial grant"
    bad = await client.get("/api/v1/account/ledger?limit=1000", headers=customer.headers)
    assert bad.status_code == 400 and bad.json()["data"]["field"] == "limit"


async def test_unknown_route_uses_the_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json() == {"code": 404, "msg": "not found", "data": {"error": "not found"}}


async def test_openapi_documents_routes_models_and_errors(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path, method in [
        ("/api/v1/account", "get"),
        ("/api/v1/account/ledger", "get"),
        ("/api/v1/keys", "get"),
        ("/api/v1/keys", "post"),
        ("/api/v1/keys/{key_id}", "delete"),
    ]:
        operation = paths[path][method]
        assert "200" in operation["responses"] and "401" in operation["responses"]
        assert operation["responses"]["401"]["content"]["application/json"]["schema"]
    assert "requestBody" in paths["/api/v1/keys"]["post"]
    # Validation errors are 400 in the envelope; FastAPI's default 422 is never answered.
    assert not any("422" in op["responses"] for ops in paths.values() for op in ops.values())
    create = paths["/api/v1/jobs/createTask"]["post"]["responses"]
    assert {"200", "400", "401", "402", "409", "429"} <= set(create)
    assert (await client.get("/docs")).status_code == 200


async def test_health_and_readiness(client: httpx.AsyncClient, runtime: Runtime) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["database"] == "ok"
    assert ("redis" in checks) == (runtime.redis is not None)
