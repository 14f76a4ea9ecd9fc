"""Inputs that once answered 500: each is now a 400 naming the field, and charges nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Customer

T2I = "gpt-image-2-text-to-image"
CREATE = "/api/v1/jobs/createTask"
ESTIMATE = "/api/v1/jobs/estimate"


async def _balance(client: httpx.AsyncClient, customer: Customer) -> int:
    response = await client.get("/api/v1/account", headers=customer.headers)
    return int(response.json()["data"]["balance"])


async def _post_raw(
    client: httpx.AsyncClient, customer: Customer, path: str, body: str
) -> httpx.Response:
    """POST a JSON text as written (escapes such as \\ud800 reach the server unparsed)."""
    headers = {**customer.headers, "Content-Type": "application/json"}
    return await client.post(path, content=body.encode(), headers=headers)


def _refused(response: httpx.Response, field: str, words: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 400 and body["data"]["field"] == field, body
    assert words in body["msg"], body
    return body


@pytest.mark.parametrize(
    ("path", "body", "field", "words"),
    [
        (
            CREATE,
            '{"model": "MODEL", "input": {"prompt": "x"}, "\\ud800": 1}',
            "body",
            "a field name is not valid Unicode",
        ),
        (
            CREATE,
            '{"model": "MODEL", "input": {"\\udfff": "x", "prompt": "x"}}',
            "input",
            "a field name is not valid Unicode",
        ),
        (
            ESTIMATE,
            '{"model": "MODEL", "input": {"prompt": "\\ud800"}}',
            "input.prompt",
            "lone surrogate",
        ),
        (
            CREATE,
            '{"model": "MODEL", "input": {"prompt": "\\ud800"}}',
            "input.prompt",
            "lone surrogate",
        ),
        (CREATE, '{"model": "MODEL", "input": {"prompt": "a\\u0000b"}}', "input.prompt", "NUL"),
        (CREATE, '{"model": "MODEL\\u0000", "input": {"prompt": "x"}}', "model", "NUL"),
        (
            CREATE,
            '{"model": "MODEL", "input": {"prompt": "x"}, "callBackUrl": ["https://a.example"]}',
            "callBackUrl",
            "must be a URL string",
        ),
        (
            ESTIMATE,
            '{"model": "MODEL", "input": {"prompt": "x"}, "callbackUrl": {"u": 1}}',
            "callbackUrl",
            "must be a URL string",
        ),
    ],
)
async def test_unstorable_text_and_odd_types_are_refused_free(
    client: httpx.AsyncClient, customer: Customer, path: str, body: str, field: str, words: str
) -> None:
    before = await _balance(client, customer)
    response = await _post_raw(client, customer, path, body.replace("MODEL", T2I))
    _refused(response, field, words)
    assert await _balance(client, customer) == before


@pytest.mark.parametrize("cursor", ["9223372036854775808", "1e23", "-1", "abc"])
async def test_ledger_cursor_outside_the_column_is_a_400(
    client: httpx.AsyncClient, customer: Customer, cursor: str
) -> None:
    response = await client.get(
        "/api/v1/account/ledger", params={"cursor": cursor}, headers=customer.headers
    )
    _refused(response, "cursor", "cursor")


async def test_largest_ledger_cursor_is_fine(client: httpx.AsyncClient, customer: Customer) -> None:
    response = await client.get(
        "/api/v1/account/ledger", params={"cursor": str(2**63 - 1)}, headers=customer.headers
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("method", "url", "field"),
    [
        ("GET", "/api/v1/jobs/recordInfo?taskId=task_%00", "taskId"),
        ("POST", "/api/v1/jobs/cancel?taskId=task_%00", "taskId"),
        ("DELETE", "/api/v1/keys/key_%00", "key_id"),
    ],
)
async def test_nul_in_parameters_is_a_400(
    client: httpx.AsyncClient, customer: Customer, method: str, url: str, field: str
) -> None:
    response = await client.request(method, url, headers=customer.headers)
    _refused(response, field, "NUL")


async def test_nul_in_a_key_name_is_a_400(client: httpx.AsyncClient, customer: Customer) -> None:
    response = await _post_raw(client, customer, "/api/v1/keys", '{"name": "a\\u0000b"}')
    _refused(response, "name", "NUL")
    listed = await client.get("/api/v1/keys", headers=customer.headers)
    assert [k["name"] for k in listed.json()["data"]] == ["test"]


async def test_missing_task_id_keeps_the_seed_text(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    response = await client.get("/api/v1/jobs/recordInfo", headers=customer.headers)
    _refused(response, "taskId", "taskId is required")


async def test_empty_request_id_is_refused_as_the_schema_says(
    client: httpx.AsyncClient, customer: Customer, app: Any
) -> None:
    header = app.openapi()["paths"][CREATE]["post"]["parameters"][0]
    assert header["name"] == "X-Request-Id"
    assert header["schema"]["anyOf"][0]["minLength"] == 1
    response = await client.post(
        CREATE,
        json={"model": T2I, "input": {"prompt": "x"}},
        headers={**customer.headers, "X-Request-Id": ""},
    )
    _refused(response, "X-Request-Id", "X-Request-Id")


async def test_405_lists_every_method_of_the_path(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    response = await client.options("/api/v1/keys", headers=customer.headers)
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}


async def test_create_and_estimate_bodies_are_described(app: Any) -> None:
    schema = app.openapi()
    for path in (CREATE, ESTIMATE):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": "#/components/schemas/TaskCreate"}
    variants = schema["components"]["schemas"]["TaskCreate"]["oneOf"]
    by_model = {v["properties"]["model"]["const"]: v for v in variants}
    assert T2I in by_model and by_model[T2I]["required"] == ["model", "input"]
    assert by_model[T2I]["properties"]["input"]["required"] == ["prompt"]


async def test_a_body_that_is_not_json_says_so(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    response = await _post_raw(client, customer, CREATE, '{"model": ')
    body = _refused(response, "body", "request body is not valid JSON")
    assert "position 10" in body["msg"] and body["data"]["position"] == 10
    form = await client.post(CREATE, data={"model": T2I}, headers=customer.headers)
    _refused(form, "body", "Content-Type: application/json")
    listed = await _post_raw(client, customer, CREATE, "[1, 2]")
    _refused(listed, "body", "must be a JSON object")


@pytest.mark.parametrize("body", [b'{"model": "\xff\xfe"}', b"[" * 5000 + b"]" * 5000])
async def test_a_body_json_cannot_read_says_so(
    client: httpx.AsyncClient, customer: Customer, body: bytes
) -> None:
    headers = {**customer.headers, "Content-Type": "application/json"}
    response = await client.post(CREATE, content=body, headers=headers)
    _refused(response, "body", "request body is not valid JSON")
