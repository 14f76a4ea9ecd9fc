"""The seed's error table over MCP, plus protocol errors: never an HTTP 500."""

import json
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from tests.mcp.conftest import McpTarget, _customer, payload_text

TIERS = {
    "tiny": {"create_per_minute": 2, "query_per_minute": 100, "max_active_tasks": 100},
    "one": {"create_per_minute": 100, "query_per_minute": 100, "max_active_tasks": 1},
    "peek": {"create_per_minute": 100, "query_per_minute": 2, "max_active_tasks": 100},
    "pro": {"create_per_minute": 600, "query_per_minute": 6000, "max_active_tasks": 100},
    "standard": {"create_per_minute": 60, "query_per_minute": 600, "max_active_tasks": 10},
}


@pytest.fixture
def server_env(settings_env: dict[str, str]) -> dict[str, str]:
    return {
        **settings_env,
        "GENGATE_TIERS": json.dumps(TIERS),
        "GENGATE_WORKERS_IN_PROCESS": "false",
    }


def _error(result: dict[str, Any]) -> dict[str, Any]:
    assert result["isError"] is True, result
    assert payload_text(result) == result["structuredContent"]
    error: dict[str, Any] = result["structuredContent"]
    return error


def _generate(target: McpTarget, **arguments: Any) -> dict[str, Any]:
    return target.call("generate_image", {"model": "gpt-image-2-text-to-image", **arguments})


def test_authentication_failed(target: McpTarget, settings: Settings) -> None:
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    cases = [
        ({}, "missing API key"),
        ({"Authorization": "Bearer not-a-key"}, "invalid API key format"),
        ({"Authorization": "Bearer sk_" + "q" * 43}, "unknown API key"),
    ]
    for headers, reason in cases:
        response = httpx.post(target.url, json=body, headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json() == {"error": "authentication failed", "reason": reason}
    revoked = httpx.delete(
        target.server.base_url + "/api/v1/keys/" + _key_id(target), headers=target.customer.headers
    )
    assert revoked.status_code == 200
    disabled = httpx.post(target.url, json=body, headers=target.customer.headers, timeout=10)
    assert disabled.status_code == 401 and disabled.json()["reason"] == "API key is disabled"


def _key_id(target: McpTarget) -> str:
    keys = httpx.get(target.server.base_url + "/api/v1/keys", headers=target.customer.headers)
    return str(keys.json()["data"][0]["id"])


def test_input_errors(target: McpTarget) -> None:
    assert (
        _error(_generate(target, model="dall-e-9", prompt="x"))["error"] == "model is not supported"
    )
    assert _error(_generate(target))["error"] == "prompt is required"
    i2i = target.call("generate_image", {"model": "gpt-image-2-image-to-image", "prompt": "x"})
    assert _error(i2i) == {"error": "input_urls is required", "field": "input_urls"}
    wrong_kind = target.call(
        "generate_image", {"model": "seedance-2.0-text-to-video", "prompt": "x"}
    )
    assert _error(wrong_kind)["error"] == "model is not supported"
    bad_enum = _error(_generate(target, prompt="x", aspect_ratio="7:1"))
    assert bad_enum["field"] == "aspect_ratio" and "1:1" in bad_enum["allowed"]
    not_found = _error(target.call("get_generation_status", {"taskId": "task_nope"}))
    assert not_found == {"error": "task not found"}
    missing_id = _error(target.call("get_generation_status", {}))
    assert missing_id["error"] == "taskId is required"
    bad_wait = _error(target.call("get_generation_status", {"taskId": "t", "wait_seconds": "soon"}))
    assert bad_wait["field"] == "wait_seconds"


async def test_other_keys_tasks_are_not_found(target: McpTarget, settings: Settings) -> None:
    created = _generate(target, prompt="mine")["structuredContent"]["taskId"]
    stranger = McpTarget(target.server, await _customer(settings))
    assert _error(stranger.call("get_generation_status", {"taskId": created})) == {
        "error": "task not found"
    }
    assert _error(stranger.call("cancel_task", {"taskId": created})) == {"error": "task not found"}


async def test_limits_and_credits(target: McpTarget, settings: Settings) -> None:
    tiny = McpTarget(target.server, await _customer(settings, tier="tiny"))
    results = [_generate(tiny, prompt=f"p{i}") for i in range(3)]
    assert [r["isError"] for r in results] == [False, False, True]
    limited = _error(results[2])
    assert limited["error"] == "rate limit exceeded"
    assert (limited["limit"], limited["tier"], limited["windowSeconds"]) == (2, "tiny", 60)
    assert limited["retryAfter"] >= 1

    one = McpTarget(target.server, await _customer(settings, tier="one"))
    assert _generate(one, prompt="first")["isError"] is False
    assert _error(_generate(one, prompt="second")) == {"error": "too many active tasks", "limit": 1}

    # get_generation_status counts against jobs.recordInfo, not jobs.createTask.
    peek = McpTarget(target.server, await _customer(settings, tier="peek"))
    task_id = _generate(peek, prompt="watch")["structuredContent"]["taskId"]
    reads = [peek.call("get_generation_status", {"taskId": task_id}) for _ in range(3)]
    assert [r["isError"] for r in reads] == [False, False, True]
    assert _error(reads[2])["limit"] == 2 and _error(reads[2])["error"] == "rate limit exceeded"
    assert _generate(peek, prompt="still allowed")["isError"] is False

    poor = McpTarget(target.server, await _customer(settings, credits=1))
    broke = _error(_generate(poor, prompt="x", quality="high"))
    assert broke["error"] == "insufficient credits" and broke["balance"] == 1


def test_protocol_errors_are_json_rpc_errors(target: McpTarget) -> None:
    unknown = target.rpc("tools/frobnicate")
    assert unknown.status_code == 200 and unknown.json()["error"]["code"] == -32601
    tool = target.rpc("tools/call", {"name": "no_such_tool", "arguments": {}})
    assert tool.status_code == 200
    answer = tool.json()
    assert "error" in answer or answer["result"]["isError"] is True
    for raw in ("{not json", json.dumps({"id": 1, "method": "tools/list"}), "[]"):
        response = httpx.post(
            target.url,
            content=raw,
            headers={**target.customer.headers, "Content-Type": "application/json"},
            timeout=10,
        )
        assert response.status_code < 500, raw
        assert "error" in response.json(), raw
