"""GET /v1/tasks and GET /v1/tasks/{id} (seed 004): shapes, status numbers, filters, paging."""

from datetime import datetime

import httpx
import pytest
from fastapi import FastAPI

from app.tasks import service
from tests.conftest import Customer, make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import eventually, runtime_of, wait_for_terminal, worker_running
from tests.v1.conftest import ISO_UTC, TASK_FIELDS, create_task, list_page, set_created_at


def _ms(day: str, clock: str = "00:00:00.000") -> int:
    return int(datetime.fromisoformat(f"{day}T{clock}+00:00").timestamp() * 1000)


async def test_seed_curl_example_answers_in_the_seed_shape(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    first = await create_task(client, customer, t2i("A beautiful sunset over mountain peaks"))
    second = await create_task(client, customer)
    # curl -X GET "https://api.imgmcp.com/v1/tasks?page=1&pageSize=10" \
    #   -H "Authorization: Bearer <Your API Key>"
    response = await client.get(
        "/v1/tasks?page=1&pageSize=10", headers={"Authorization": f"Bearer {customer.key}"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"total", "page", "pageSize", "tasks", "totalIsEstimate"}
    assert (body["total"], body["page"], body["pageSize"]) == (2, 1, 10)
    assert body["totalIsEstimate"] is False
    assert [t["id"] for t in body["tasks"]] == [second, first]  # newest first
    task = body["tasks"][1]
    assert set(task) == TASK_FIELDS
    assert task["model"] == "gpt-image-2-text-to-image"
    assert task["style"] == ""
    # What the task ran with: the model and its inputs, defaults filled in.
    assert task["request"] == {
        "model": "gpt-image-2-text-to-image",
        "prompt": "A beautiful sunset over mountain peaks",
        "aspect_ratio": "1:1",
        "output_format": "png",
        "quality": "medium",
    }
    assert task["response"] == {"assets": []}
    assert task["status"] == 0
    assert task["cost"] > 0
    assert task["startedAt"] is None and task["finishedAt"] is None
    assert ISO_UTC.fullmatch(task["createdAt"]) and ISO_UTC.fullmatch(task["updatedAt"])

    one = await client.get(f"/v1/tasks/{first}", headers=customer.headers)
    assert one.status_code == 200
    assert one.json() == task


async def test_each_status_number_and_its_filter(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    done = await create_task(client, customer, t2i("a red kite"))
    failed = await create_task(client, customer, t2i("boom [[fail:provider_error]]"))
    async with worker_running(runtime):
        succeeded = await wait_for_terminal(client, customer.headers, done)
        await wait_for_terminal(client, customer.headers, failed)
    assert succeeded["state"] == "success"

    slow = await create_task(client, customer, t2i("slow [[delay:1500]]"))
    async with worker_running(runtime):

        async def generating() -> dict | None:  # type: ignore[type-arg]
            item = (await client.get(f"/v1/tasks/{slow}", headers=customer.headers)).json()
            return item if item["status"] == 1 else None

        item = await eventually(generating, what="the slow task to start")
        assert ISO_UTC.fullmatch(item["startedAt"]) and item["finishedAt"] is None
        processing = (await list_page(client, customer, status=1)).json()
        assert [t["id"] for t in processing["tasks"]] == [slow]
        await wait_for_terminal(client, customer.headers, slow)
    queued = await create_task(client, customer)

    async def ids(status: int) -> list[str]:
        response = await list_page(client, customer, status=status)
        assert response.status_code == 200, response.text
        assert response.json()["total"] == len(response.json()["tasks"])
        return [t["id"] for t in response.json()["tasks"]]

    assert await ids(0) == [queued]
    assert await ids(1) == []
    assert await ids(2) == [slow, done]
    assert await ids(3) == [failed]

    by_id = {t["id"]: t for t in (await list_page(client, customer)).json()["tasks"]}
    ok, fail = by_id[done], by_id[failed]
    assert ok["status"] == 2 and fail["status"] == 3
    assert ok["cost"] == succeeded["credits"] > 0
    assert fail["cost"] == 0  # a provider error is refunded
    assert len(ok["response"]["assets"]) == 1 and fail["response"]["assets"] == []
    for item in (ok, fail):
        assert ISO_UTC.fullmatch(item["startedAt"]) and ISO_UTC.fullmatch(item["finishedAt"])
        assert item["createdAt"] <= item["finishedAt"] == item["updatedAt"]


async def test_paging_edges(idle_app: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    created = [await create_task(client, customer) for _ in range(5)]
    newest_first = created[::-1]

    default = (await list_page(client, customer)).json()
    assert (default["page"], default["pageSize"], default["total"]) == (1, 20, 5)
    pages = []
    for page in (1, 2, 3):
        body = (await list_page(client, customer, page=page, pageSize=2)).json()
        assert (body["total"], body["page"], body["pageSize"]) == (5, page, 2)
        pages += [t["id"] for t in body["tasks"]]
    assert pages == newest_first
    beyond = await list_page(client, customer, page=4, pageSize=2)
    assert beyond.status_code == 200
    assert beyond.json() == {
        "total": 5,
        "page": 4,
        "pageSize": 2,
        "tasks": [],
        "totalIsEstimate": False,
    }
    widest = (await list_page(client, customer, pageSize=100)).json()
    assert [t["id"] for t in widest["tasks"]] == newest_first

    for params, field in (
        ({"pageSize": 0}, "pageSize"),
        ({"pageSize": 101}, "pageSize"),
        ({"pageSize": "ten"}, "pageSize"),
        ({"page": 0}, "page"),
        ({"page": -1}, "page"),
        ({"page": "x"}, "page"),
        ({"page": 1_000_001}, "page"),
        ({"status": 4}, "status"),
        ({"status": "done"}, "status"),
    ):
        response = await list_page(client, customer, **params)
        assert response.status_code == 400, params
        assert list(response.json()) == ["message"]
        assert response.json()["message"].startswith(field), response.json()


async def test_an_empty_history(client: httpx.AsyncClient, customer: Customer) -> None:
    body = (await list_page(client, customer, page=3)).json()
    assert body == {"total": 0, "page": 3, "pageSize": 20, "tasks": [], "totalIsEstimate": False}


async def test_model_and_date_filters(idle_app: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime, credits=100_000)
    video = {"model": "seedance-2.0-text-to-video", "input": {"prompt": "waves"}}
    days = {
        await create_task(client, customer): _ms("2025-06-10", "23:59:59.999"),
        await create_task(client, customer): _ms("2025-06-11"),
        await create_task(client, customer, video): _ms("2025-06-11", "23:59:59.999"),
        await create_task(client, customer): _ms("2025-06-12"),
    }
    for task_id, created_at in days.items():
        await set_created_at(runtime, task_id, created_at)
    before, first_of_11, video_11, after = days

    async def ids(**params: object) -> list[str]:
        response = await list_page(client, customer, **params)
        assert response.status_code == 200, response.text
        assert response.json()["total"] == len(response.json()["tasks"])
        return [t["id"] for t in response.json()["tasks"]]

    assert await ids() == [after, video_11, first_of_11, before]
    assert await ids(start="2025-06-11", end="2025-06-11") == [video_11, first_of_11]
    assert await ids(start="2025-06-11") == [after, video_11, first_of_11]
    assert await ids(end="2025-06-11") == [video_11, first_of_11, before]
    assert await ids(start="2025-06-13") == []
    assert await ids(model="seedance-2.0-text-to-video") == [video_11]
    assert await ids(model="gpt-image-2-text-to-image", start="2025-06-11", end="2025-06-12") == [
        after,
        first_of_11,
    ]
    assert await ids(model="gpt-image-2-text-to-image", status=0, end="2025-06-10") == [before]
    assert await ids(model="no-such-model") == []
    item = (await client.get(f"/v1/tasks/{video_11}", headers=customer.headers)).json()
    assert item["createdAt"] == "2025-06-11T23:59:59Z"

    for params, field in (
        ({"start": "2025-06-12", "end": "2025-06-11"}, "end"),
        ({"start": "2025-13-01"}, "start"),
        ({"start": "2025/06/11"}, "start"),
        ({"end": "20250611"}, "end"),
        ({"end": "2025-02-30"}, "end"),
        ({"start": "2025-06-11T00:00:00"}, "start"),
        ({"start": ""}, "start"),
    ):
        response = await list_page(client, customer, **params)
        assert response.status_code == 400, params
        assert list(response.json()) == ["message"]
        assert field in response.json()["message"], response.json()
    reversed_range = await list_page(client, customer, start="2025-06-12", end="2025-06-11")
    assert reversed_range.json() == {"message": "end must not be before start"}


async def test_a_key_sees_only_its_own_tasks(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    mine, other = await make_customer(runtime), await make_customer(runtime)
    task_id = await create_task(client, mine)
    assert (await list_page(client, other)).json()["total"] == 0
    foreign = await client.get(f"/v1/tasks/{task_id}", headers=other.headers)
    assert (foreign.status_code, foreign.json()) == (404, {"message": "task not found"})
    unknown = await client.get("/v1/tasks/task_0000", headers=mine.headers)
    assert (unknown.status_code, unknown.json()) == (404, {"message": "task not found"})


async def test_total_past_the_exact_limit_is_a_flagged_lower_bound(
    idle_app: tuple[FastAPI, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    for _ in range(5):
        await create_task(client, customer)
    monkeypatch.setattr(service, "TOTAL_EXACT_LIMIT", 3)
    first = (await list_page(client, customer, pageSize=2)).json()
    assert (first["total"], first["totalIsEstimate"]) == (4, True)
    assert len(first["tasks"]) == 2
    # The last page ends the list: its total is exact without counting.
    last = (await list_page(client, customer, page=3, pageSize=2)).json()
    assert (last["total"], last["totalIsEstimate"], len(last["tasks"])) == (5, False, 1)
    beyond = (await list_page(client, customer, page=9, pageSize=2)).json()
    assert (beyond["total"], beyond["totalIsEstimate"], beyond["tasks"]) == (4, True, [])
    monkeypatch.setattr(service, "TOTAL_EXACT_LIMIT", 5)
    exact = (await list_page(client, customer, pageSize=2)).json()
    assert (exact["total"], exact["totalIsEstimate"]) == (5, False)
