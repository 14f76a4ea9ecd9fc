"""The MCP tool list_tasks: GET /v1/tasks's filters, pages and shapes, a readable summary,
and a resource link per result file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import Customer, make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import runtime_of, wait_for_terminal, worker_running
from tests.v1.conftest import create_task, list_page, set_created_at

T2I = "gpt-image-2-text-to-image"
T2V = "seedance-2.0-text-to-video"


async def _list(
    client: httpx.AsyncClient, customer: Customer, arguments: dict[str, Any]
) -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "list_tasks", "arguments": arguments},
    }
    response = await client.post(
        "/api/mcp",
        content=json.dumps(body).encode(),
        headers={**customer.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    assert result["isError"] is False, result
    return result


def _links(result: dict[str, Any]) -> list[dict[str, Any]]:
    assert result["content"][0]["type"] == "text"
    links = result["content"][1:]
    assert all(block["type"] == "resource_link" for block in links), links
    return links


async def test_the_same_pages_as_get_v1_tasks_with_a_link_per_asset(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    done = [await create_task(client, customer, t2i(f"kite {i}")) for i in range(2)]
    failed = await create_task(client, customer, t2i("boom [[fail:provider_error]]"))
    async with worker_running(runtime):
        for task_id in [*done, failed]:
            await wait_for_terminal(client, customer.headers, task_id)
    queued = await create_task(client, customer, t2i("later"))

    everything = await _list(client, customer, {})
    page = everything["structuredContent"]
    rest = (await list_page(client, customer)).json()
    assert page == rest
    assert [t["id"] for t in page["tasks"]] == [queued, failed, *reversed(done)]
    assert [t["status"] for t in page["tasks"]] == [0, 3, 2, 2]

    summary = everything["content"][0]["text"]
    assert summary.startswith("Tasks 1-4 of 4, newest first:"), summary
    lines = summary.splitlines()[1:]
    assert [line.split(",")[0] for line in lines] == [f"- {t['id']}" for t in page["tasks"]]
    assert ", pending," in lines[0] and ", failed," in lines[1]
    assert all(", completed, 1 asset(s)," in line for line in lines[2:])
    assert "More:" not in summary

    # One link per asset, in the listed order, each a working signed download.
    links = _links(everything)
    assets = [(t["id"], a) for t in page["tasks"] for a in t["response"]["assets"]]
    assert len(links) == len(assets) == 2
    for link, (task_id, asset_id) in zip(links, assets, strict=True):
        assert link["name"] == f"{task_id}-1.png" and asset_id in link["description"]
        assert link["mimeType"] == "image/png"
        downloaded = await client.get(link["uri"])
        assert downloaded.status_code == 200
        assert downloaded.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(downloaded.content) == link["size"]
        asset = (await client.get(f"/v1/assets/{asset_id}", headers=customer.headers)).json()
        assert (asset["taskId"], asset["bytes"]) == (task_id, link["size"])


async def test_filters_and_paging_are_get_v1_tasks_own(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    images = [await create_task(client, customer, t2i(f"img {i}")) for i in range(3)]
    video = await create_task(
        client, customer, {"model": T2V, "input": {"prompt": "a wave", "duration": 5}}
    )
    await set_created_at(runtime, images[0], _ms("2025-06-10"))
    today = datetime.now(UTC).strftime("%Y-%m-%d")

    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"model": T2V}, [video]),
        ({"model": T2I, "pageSize": 1, "page": 2}, [images[1]]),
        ({"status": 0, "start": today, "end": today}, [video, images[2], images[1]]),
        ({"start": "2025-06-10", "end": "2025-06-10"}, [images[0]]),
        ({"status": 2}, []),
        ({"pageSize": 2, "page": 3}, []),
    ]
    for arguments, expected in cases:
        result = await _list(client, customer, arguments)
        page = result["structuredContent"]
        assert [t["id"] for t in page["tasks"]] == expected, arguments
        assert page == (await list_page(client, customer, **arguments)).json(), arguments
        assert _links(result) == []  # nothing finished, nothing to link

    second = await _list(client, customer, {"model": T2I, "pageSize": 1, "page": 2})
    text = second["content"][0]["text"]
    assert text.startswith("Tasks 2-2 of 3, newest first:") and text.endswith("More: page=3.")
    empty = await _list(client, customer, {"status": 2})
    assert empty["content"][0]["text"] == "No tasks on page 1 (total 0)."


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp() * 1000)
