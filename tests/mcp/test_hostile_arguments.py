"""MCP arguments that once gave an "internal error", were silently dropped or returned a
default: each is now a tool error naming the argument, and nothing is charged."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.core.config import Settings, TierLimits
from tests.conftest import Customer, make_customer
from tests.support.apps import running_app, runtime_of

T2I = "gpt-image-2-text-to-image"
T2V = "seedance-2.0-text-to-video"


async def _rpc(
    client: httpx.AsyncClient, customer: Customer, body: Any, **headers: str
) -> httpx.Response:
    return await client.post(
        "/api/mcp",
        content=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={**customer.headers, "Content-Type": "application/json", **headers},
    )


async def _call(
    client: httpx.AsyncClient, customer: Customer, tool: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    response = await _rpc(client, customer, body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def _error(result: dict[str, Any], field: str, words: str) -> dict[str, Any]:
    assert result["isError"] is True, result
    error: dict[str, Any] = result["structuredContent"]
    assert error.get("field") == field and words in error["error"], error
    return error


async def _balance(client: httpx.AsyncClient, customer: Customer) -> int:
    response = await client.get("/api/v1/account", headers=customer.headers)
    return int(response.json()["data"]["balance"])


@pytest.mark.parametrize(
    ("tool", "arguments", "field", "words"),
    [
        (
            "generate_video",
            {"model": T2V, "prompt": "x", "aspectRatio": "9:16"},
            "aspectRatio",
            "did you mean aspect_ratio?",
        ),
        (
            "generate_video",
            {"model": T2V, "prompt": "x", "durations": "10"},
            "durations",
            "did you mean duration?",
        ),
        (
            "generate_image",
            {"model": T2I, "prompt": "x", "input": {"qualty": "high"}},
            "qualty",
            "did you mean quality?",
        ),
        (
            "generate_image",
            {"model": T2I, "prompt": "x", "input": {"prompt": "y"}},
            "prompt",
            "both inside input and beside model",
        ),
        (
            "generate_image",
            {"model": T2I, "prompt": "x", "aspect_ratio": "16:9", "resolution": "1024x1024"},
            "aspect_ratio",
            "contradicts",
        ),
        (
            "generate_image",
            {"model": T2I, "prompt": "x", "request_id": True},
            "request_id",
            "must be a string",
        ),
        (
            "generate_image",
            {"model": T2I, "prompt": "x", "request_id": -1},
            "request_id",
            "must be a string",
        ),
        (
            "generate_image",
            {"model": T2I, "prompt": "x", "request_id": {"a": 1}},
            "request_id",
            "must be a string",
        ),
        (
            "generate_image",
            {"model": T2I, "prompt": "x", "request_id": "a\u0000"},
            "request_id",
            "NUL",
        ),
        ("generate_image", {"model": T2I + "\u0000", "prompt": "x"}, "model", "NUL"),
        (
            "generate_image",
            {"model": T2I, "prompt": "x", "callBackUrl": ["https://a.example"]},
            "callBackUrl",
            "must be a URL string",
        ),
        (
            "estimate_cost",
            {"model": T2I, "prompt": "x", "colour": "red"},
            "colour",
            "unknown input field",
        ),
        ("get_generation_status", {"taskId": "task_\u0000"}, "taskId", "NUL"),
        ("get_generation_status", {"taskid": "task_1"}, "taskid", "did you mean taskId?"),
        ("cancel_task", {"taskId": "task_\u0000"}, "taskId", "NUL"),
        ("list_tasks", {"model": "x\u0000"}, "model", "NUL"),
        ("list_tasks", {"status": True}, "status", "one of 0 (pending)"),
        ("list_tasks", {"status": "2"}, "status", "one of 0 (pending)"),
        ("list_tasks", {"status": 4}, "status", "one of 0 (pending)"),
        ("list_tasks", {"start": "2025-6-1"}, "start", "YYYY-MM-DD"),
        ("list_tasks", {"end": 20250601}, "end", "must be a string"),
        ("list_tasks", {"start": "2025-06-02", "end": "2025-06-01"}, "end", "before start"),
        ("list_tasks", {"page": 0}, "page", "integer from 1 to"),
        ("list_tasks", {"page": 1.5}, "page", "integer from 1 to"),
        ("list_tasks", {"pageSize": 101}, "pageSize", "from 1 to 100"),
        ("list_tasks", {"pageSize": "10"}, "pageSize", "from 1 to 100"),
        ("list_tasks", {"page_size": 10}, "page_size", "did you mean pageSize?"),
        ("list_tasks", {"limit": 5}, "limit", "unknown argument"),
    ],
)
async def test_bad_arguments_are_tool_errors_and_free(
    client: httpx.AsyncClient,
    customer: Customer,
    tool: str,
    arguments: dict[str, Any],
    field: str,
    words: str,
) -> None:
    before = await _balance(client, customer)
    _error(await _call(client, customer, tool, arguments), field, words)
    assert await _balance(client, customer) == before


async def test_rest_refuses_the_same_way(client: httpx.AsyncClient, customer: Customer) -> None:
    body = {"model": T2V, "input": {"prompt": "x"}, "durations": "10"}
    response = await client.post("/api/v1/jobs/createTask", json=body, headers=customer.headers)
    assert response.status_code == 400
    assert response.json()["data"]["suggestion"] == "duration"


async def test_a_pixel_resolution_sets_the_aspect_ratio_it_implies(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    result = await _call(
        client, customer, "estimate_cost", {"model": T2I, "prompt": "x", "resolution": "1536x1024"}
    )
    assert result["isError"] is False, result
    assert result["structuredContent"]["input"]["aspect_ratio"] == "3:2"


async def test_a_get_for_an_event_stream_is_405(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    response = await client.get(
        "/api/mcp", headers={**customer.headers, "Accept": "text/event-stream"}
    )
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    plain = await client.get("/api/mcp")
    assert plain.status_code == 200 and plain.json()["name"] == "gengate"


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}], -32600, "batches"),
        ({"jsonrpc": "2.0", "id": None, "method": "tools/list"}, -32600, "id must be"),
        (b'{"jsonrpc": "2.0", ', -32700, "not valid JSON"),
        (b"42", -32600, "JSON-RPC object"),
        (b"[" * 100_000 + b"]" * 100_000, -32700, "nests too deep"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}', -32700, "not valid JSON"),
    ],
)
async def test_protocol_misuse_gets_a_short_jsonrpc_error(
    client: httpx.AsyncClient, customer: Customer, body: Any, code: int, words: str
) -> None:
    response = await _rpc(client, customer, body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] is None
    assert answer["error"]["code"] == code and words in answer["error"]["message"]
    assert len(response.content) < 300


async def test_list_tasks_counts_against_the_read_limit(settings: Settings) -> None:
    # A long window: the sliding-window counter weighs in the previous window, so a short
    # one straddled by the test would let a call or two more through.
    tiers = {
        "peek": TierLimits(
            create_per_minute=5, query_per_minute=3, max_active_tasks=5, window_seconds=86400
        )
    }
    limited_settings = settings.model_copy(update={"tiers": tiers, "default_tier": "peek"})
    async with running_app(limited_settings) as (app, client):
        customer = await make_customer(runtime_of(app), tier="peek")
        for _ in range(3):
            assert (await _call(client, customer, "list_tasks", {}))["isError"] is False
        limited = await _call(client, customer, "list_tasks", {})
        assert limited["isError"] is True, limited
        error = limited["structuredContent"]
        assert error["error"] == "rate limit exceeded" and error["limit"] == 3, error
        # The same budget as recordInfo: it is spent.
        response = await client.get(
            "/api/v1/jobs/recordInfo", params={"taskId": "task_x"}, headers=customer.headers
        )
        assert response.status_code == 429


async def test_a_body_far_over_the_upload_limit_is_refused_unread(settings: Settings) -> None:
    small = settings.model_copy(update={"upload_max_bytes": 1000})
    async with running_app(small) as (app, client):
        customer = await make_customer(runtime_of(app))
        body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "pad": "'
        response = await _rpc(client, customer, body + b"x" * (2 << 20) + b'"}')
        assert response.status_code == 413
        assert response.json()["error"]["code"] == -32600
