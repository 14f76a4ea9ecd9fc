"""The MCP tools imagine and reimagine: POST /v1/imagine and /v1/reimagine's bodies as
arguments, `params` for a model's own inputs, request_id idempotency, errors naming the
argument, and lineage in list_tasks."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.catalog.catalog import load_catalog
from app.imagine.styles import load_styles
from mcp_server.server import tool_specs
from tests.conftest import Customer, make_customer
from tests.support.apps import runtime_of, wait_for_terminal

T2I = "gpt-image-2-text-to-image"


async def _call(
    client: httpx.AsyncClient,
    customer: Customer,
    tool: str,
    arguments: dict[str, Any],
    **headers: str,
) -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    response = await client.post(
        "/api/mcp",
        content=json.dumps(body).encode(),
        headers={**customer.headers, "Content-Type": "application/json", **headers},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def _ids(result: dict[str, Any]) -> list[str]:
    assert result["isError"] is False, result
    ids: list[str] = result["structuredContent"]["ids"]
    assert set(result["structuredContent"]) == {"ids"}
    text = result["content"][0]["text"]
    assert all(task_id in text for task_id in ids) and "get_generation_status" in text, text
    return ids


def _error(result: dict[str, Any], field: str | None, words: str) -> dict[str, Any]:
    assert result["isError"] is True, result
    error: dict[str, Any] = result["structuredContent"]
    assert json.loads(result["content"][0]["text"]) == error
    assert error.get("field") == field and words in error["error"], error
    return error


async def _task(client: httpx.AsyncClient, customer: Customer, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/tasks/{task_id}", headers=customer.headers)
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def _balance(client: httpx.AsyncClient, customer: Customer) -> int:
    response = await client.get("/api/v1/account", headers=customer.headers)
    return int(response.json()["data"]["balance"])


async def test_imagine_creates_n_tasks_with_the_model_params_given_either_way(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    customer = await make_customer(runtime_of(app), credits=10_000)
    nested = _ids(
        await _call(
            client,
            customer,
            "imagine",
            {
                "n": 2,
                "model": T2I,
                "style": "photo",
                "prompt": "a lighthouse",
                "params": {"aspect_ratio": "16:9"},
            },
        )
    )
    flat = _ids(
        await _call(
            client,
            customer,
            "imagine",
            {"model": T2I, "style": "photo", "prompt": "a lighthouse", "aspect_ratio": "16:9"},
        )
    )
    assert len(nested) == 2 and len(flat) == 1 and len(set(nested + flat)) == 3
    tasks = [await _task(client, customer, task_id) for task_id in [*nested, *flat]]
    assert all(t["style"] == "photo" and t["model"] == T2I for t in tasks)
    assert all(t["request"]["aspect_ratio"] == "16:9" for t in tasks), tasks
    assert {**tasks[0]["request"], "n": 1} == tasks[2]["request"] and tasks[0]["cost"] > 0

    for task_id in nested:
        done = await wait_for_terminal(client, customer.headers, task_id)
        assert done["state"] == "success", done
    listed = await _call(client, customer, "list_tasks", {"status": 2})
    assert {t["id"] for t in listed["structuredContent"]["tasks"]} >= set(nested)


async def test_reimagine_makes_a_child_that_list_tasks_shows(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    customer = await make_customer(runtime_of(app), credits=10_000)
    [parent] = _ids(await _call(client, customer, "imagine", {"prompt": "a fox"}))
    # Still queued or generating: nothing to reimagine yet, or already done: either way the
    # argument is named, never an internal error.
    early = await _call(
        client, customer, "reimagine", {"task_id": parent, "index": 1, "action": "upscale"}
    )
    if early["isError"]:
        _error(early, "task_id", "completed")
    assert (await wait_for_terminal(client, customer.headers, parent))["state"] == "success"

    result = await _call(
        client, customer, "reimagine", {"task_id": parent, "index": 1, "action": "variation"}
    )
    [child] = _ids(result)
    assert f"variation of result 1 of {parent}" in result["content"][0]["text"]
    assert (await wait_for_terminal(client, customer.headers, child))["state"] == "success"

    listed = await _call(client, customer, "list_tasks", {"pageSize": 1})
    [item] = listed["structuredContent"]["tasks"]
    assert (item["id"], item["parentTaskId"], item["action"], item["index"]) == (
        child,
        parent,
        "variation",
        1,
    )
    assert f"variation of {parent} #1" in listed["content"][0]["text"]
    [link] = [b for b in listed["content"] if b["type"] == "resource_link"]
    assert (await client.get(link["uri"])).status_code == 200


async def test_request_id_makes_a_retry_return_the_same_tasks_unpaid(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app), credits=10_000)
    body = {"n": 2, "prompt": "a kettle"}
    first = _ids(await _call(client, customer, "imagine", {**body, "request_id": "img-1"}))
    balance = await _balance(client, customer)
    again = _ids(await _call(client, customer, "imagine", {**body, "request_id": "img-1"}))
    by_header = _ids(await _call(client, customer, "imagine", body, **{"X-Request-Id": "img-2"}))
    header_again = _ids(await _call(client, customer, "imagine", body, **{"X-Request-Id": "img-2"}))
    assert first == again and by_header == header_again and set(first).isdisjoint(by_header)
    assert await _balance(client, customer) < balance  # img-2 paid once
    paid_for_two = await _balance(client, customer)
    clash = await _call(client, customer, "imagine", {"prompt": "other", "request_id": "img-1"})
    assert clash["isError"] is True and "already used" in clash["structuredContent"]["error"]
    assert await _balance(client, customer) == paid_for_two


@pytest.mark.parametrize(
    ("tool", "arguments", "field", "words"),
    [
        ("imagine", {"n": 9, "prompt": "x"}, "n", "from 1 to 8"),
        ("imagine", {"n": True, "prompt": "x"}, "n", "from 1 to 8"),
        ("imagine", {"prompt": "x", "style": "cubist"}, "style", "must be one of"),
        ("imagine", {"prompt": "x", "reference": "https://a.example/x.png"}, "reference", "array"),
        ("imagine", {"prompt": "x", "params": "16:9"}, "params", "must be an object"),
        (
            "imagine",
            {"prompt": "x", "aspect_ratio": "1:1", "params": {"aspect_ratio": "16:9"}},
            "params.aspect_ratio",
            "both inside params and beside it",
        ),
        ("imagine", {"prompt": "x", "request_id": 5}, "request_id", "must be a string"),
        ("reimagine", {"task_id": "task_nope", "index": 1, "action": "upscale"}, None, "not found"),
        ("reimagine", {"index": 1, "action": "upscale"}, "task_id", "required"),
        ("reimagine", {"task_id": "t", "index": 0, "action": "upscale"}, "index", "integer"),
        ("reimagine", {"task_id": "t", "index": 1, "action": "zoom"}, "action", "one of"),
        ("reimagine", {"taskId": "t", "index": 1, "action": "reroll"}, "taskId", "task_id?"),
    ],
)
async def test_bad_arguments_name_the_field_and_cost_nothing(
    client: httpx.AsyncClient,
    customer: Customer,
    tool: str,
    arguments: dict[str, Any],
    field: str | None,
    words: str,
) -> None:
    before = await _balance(client, customer)
    _error(await _call(client, customer, tool, arguments), field, words)
    assert await _balance(client, customer) == before


async def test_not_enough_credits_is_the_seeds_error(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    poor = await make_customer(runtime_of(app), credits=0)
    result = await _call(client, poor, "imagine", {"prompt": "x"})
    assert result["isError"] is True
    assert result["structuredContent"]["error"] == "insufficient credits"


def test_the_schemas_list_the_catalog_and_the_styles() -> None:
    catalog = load_catalog()
    styles = load_styles(None, catalog)
    specs = {spec.name: spec for spec in tool_specs(catalog, styles)}
    imagine = specs["imagine"].properties
    assert set(imagine) == {
        "n",
        "model",
        "style",
        "prompt",
        "reference",
        "callback_url",
        "params",
        "request_id",
    }
    assert imagine["model"]["enum"] == catalog.ids
    assert imagine["style"]["enum"] == ["", *styles.names] and "photo" in styles.names
    assert imagine["params"]["type"] == "object"
    reimagine = specs["reimagine"]
    assert reimagine.required == ("task_id", "index", "action")
    assert reimagine.properties["action"]["enum"] == ["upscale", "variation", "reroll"]
    assert not specs["imagine"].read_only and not reimagine.read_only
