"""POST /v1/reimagine (seed 004): upscale, variation and reroll of a completed task's asset,
the lineage each new task records (GET /v1/tasks, /v1/tasks/{id}, jobs.recordInfo), its own
credits, idempotent replays, and every refusal in the seed's {"message"} shape with nothing
created or charged."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlmodel import col

from app.core.config import Settings, TierLimits
from app.core.ids import now_ms
from app.jobs.models import Task
from app.keys.service import create_api_key
from app.media.models import MediaFile
from app.media.service import signed_media_url
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.support.apps import (
    record_info,
    running_app,
    runtime_of,
    wait_for_terminal,
    worker_running,
)
from tests.v1.conftest import balance_of, create_task, ledger_of, tasks_of

# The seed's reimagine example body, verbatim but for the task id it names.
SEED_EXAMPLE = {"task_id": "task-uuid-2", "index": 1, "action": "upscale"}
ROOMY = {
    "standard": TierLimits(create_per_minute=1000, query_per_minute=10000, max_active_tasks=100)
}
LOW = {"quality": "low"}  # keeps the local renderer quick and the prices small
VIDEO = {
    "model": "seedance-2.0-text-to-video",
    "prompt": "waves on a beach",
    "duration": "5",
    "resolution": "480p",
}
IMAGE_UPSCALE_PRICE = 2  # image-upscale: base 2, scale 2


@pytest.fixture
def roomy(settings: Settings) -> Settings:
    """No workers in the app: a test runs one (worker_running) when tasks should finish."""
    return settings.model_copy(update={"tiers": ROOMY, "workers_in_process": False})


@pytest.fixture
async def roomy_app(roomy: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with running_app(roomy) as pair:
        yield pair


async def post(
    client: httpx.AsyncClient,
    customer: Customer,
    path: str,
    body: Any,
    *,
    request_id: str | None = None,
) -> httpx.Response:
    headers = dict(customer.headers)
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return await client.post(path, json=body, headers=headers)


async def reimagine(
    client: httpx.AsyncClient,
    customer: Customer,
    body: Any,
    *,
    request_id: str | None = None,
) -> httpx.Response:
    return await post(client, customer, "/v1/reimagine", body, request_id=request_id)


async def reimagined(client: httpx.AsyncClient, customer: Customer, body: dict[str, Any]) -> str:
    """The one task id a successful reimagine answers."""
    response = await reimagine(client, customer, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"ids"} and len(answer["ids"]) == 1, answer
    task_id: str = answer["ids"][0]
    return task_id


async def imagined(client: httpx.AsyncClient, customer: Customer, body: dict[str, Any]) -> str:
    response = await post(client, customer, "/v1/imagine", body)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["ids"][0]
    return task_id


async def item_of(client: httpx.AsyncClient, customer: Customer, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/tasks/{task_id}", headers=customer.headers)
    assert response.status_code == 200, response.text
    item: dict[str, Any] = response.json()
    return item


async def listed(client: httpx.AsyncClient, customer: Customer) -> dict[str, dict[str, Any]]:
    """Every task of the key as GET /v1/tasks lists it, by id."""
    response = await client.get("/v1/tasks", params={"pageSize": 100}, headers=customer.headers)
    assert response.status_code == 200, response.text
    return {task["id"]: task for task in response.json()["tasks"]}


async def info_of(client: httpx.AsyncClient, customer: Customer, task_id: str) -> dict[str, Any]:
    return await record_info(client, customer.headers, task_id)


async def param_of(client: httpx.AsyncClient, customer: Customer, task_id: str) -> dict[str, Any]:
    """recordInfo's `param`: the model and the inputs the task ran with."""
    param: dict[str, Any] = json.loads((await info_of(client, customer, task_id))["param"])
    return param


def unsigned(param: dict[str, Any]) -> dict[str, Any]:
    """`param` with our own media URLs cut before their signature, which a reroll renews
    (the same file, signed to outlive the new task)."""
    inputs = {
        name: [url.split("?exp=", 1)[0] for url in value] if name.endswith("_urls") else value
        for name, value in param["input"].items()
    }
    return {**param, "input": inputs}


async def asset_of(
    client: httpx.AsyncClient, customer: Customer, task_id: str, index: int = 1
) -> dict[str, Any]:
    item = await item_of(client, customer, task_id)
    asset_id = item["response"]["assets"][index - 1]
    response = await client.get(f"/v1/assets/{asset_id}", headers=customer.headers)
    assert response.status_code == 200, response.text
    asset: dict[str, Any] = response.json()
    return asset


async def finished(client: httpx.AsyncClient, customer: Customer, task_id: str) -> None:
    done = await wait_for_terminal(client, customer.headers, task_id)
    assert done["state"] == "success", done


async def completed(
    runtime: Runtime, client: httpx.AsyncClient, customer: Customer, body: dict[str, Any]
) -> str:
    """A task made by /v1/imagine and run to success by a worker of its own."""
    task_id = await imagined(client, customer, body)
    async with worker_running(runtime):
        await finished(client, customer, task_id)
    return task_id


def movements_of(ledger: list[tuple[str, int, str | None]], task_id: str) -> list[tuple[str, int]]:
    return [(kind, amount) for kind, amount, task in ledger if task == task_id]


def assert_lineage(
    item: dict[str, Any], parent: str | None, action: str | None, index: int | None
) -> None:
    assert (item["parentTaskId"], item["action"], item["index"]) == (parent, action, index), item


async def assert_lineage_everywhere(
    client: httpx.AsyncClient,
    customer: Customer,
    task_id: str,
    parent: str | None,
    action: str | None,
    index: int | None,
) -> None:
    """The same lineage in GET /v1/tasks, GET /v1/tasks/{id} and jobs.recordInfo."""
    assert_lineage((await listed(client, customer))[task_id], parent, action, index)
    assert_lineage(await item_of(client, customer, task_id), parent, action, index)
    assert_lineage(await info_of(client, customer, task_id), parent, action, index)


# --------------------------------------------------------------------------- actions


async def test_seed_example_upscales_the_asset_two_times(
    roomy_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = roomy_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime, credits=100)
    source = await completed(runtime, client, customer, {"prompt": "a lighthouse", **LOW})
    balance = await balance_of(client, customer)
    # curl -X POST https://api.imgmcp.com/v1/reimagine -H "Authorization: Bearer <Your API Key>"
    #   -H "Content-Type: application/json" -d '{"task_id": ..., "index": 1, "action": "upscale"}'
    response = await client.post(
        "/v1/reimagine",
        content=json.dumps({**SEED_EXAMPLE, "task_id": source}),
        headers={"Authorization": f"Bearer {customer.key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"ids"} and len(answer["ids"]) == 1
    upscaled = answer["ids"][0]
    assert upscaled != source
    assert await balance_of(client, customer) == balance - IMAGE_UPSCALE_PRICE  # held
    async with worker_running(runtime):
        await finished(client, customer, upscaled)
    item = await item_of(client, customer, upscaled)
    assert item["model"] == "image-upscale" and item["status"] == 2
    assert item["cost"] == IMAGE_UPSCALE_PRICE
    assert_lineage(item, source, "upscale", 1)
    before, after = (
        await asset_of(client, customer, source),
        await asset_of(client, customer, upscaled),
    )
    assert before["width"] and before["height"]
    assert (after["width"], after["height"]) == (2 * before["width"], 2 * before["height"])
    assert after["sha256"] != before["sha256"]
    # The upscaler was given the source's asset, from our own storage.
    param = await param_of(client, customer, upscaled)
    assert param["model"] == "image-upscale"
    assert len(param["input"]["input_urls"]) == 1 and "prompt" not in param["input"]
    ledger = await ledger_of(runtime, customer)
    assert movements_of(ledger, upscaled) == [("hold", -IMAGE_UPSCALE_PRICE), ("settle", 0)]
    assert await balance_of(client, customer) == balance - IMAGE_UPSCALE_PRICE


def names_asset(url: str, asset: dict[str, Any]) -> bool:
    """Whether `url` is a signed URL of our own copy of `asset`."""
    return url.startswith("http") and f"/media/{asset['id']}." in url and "sig=" in url


async def test_each_action_records_its_lineage_and_holds_its_own_price(
    roomy_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = roomy_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime, credits=100)
    source = await completed(
        runtime,
        client,
        customer,
        {"model": "gpt-image-1", "style": "watercolor", "prompt": "a red kite", **LOW},
    )
    source_cost = (await item_of(client, customer, source))["cost"]
    balance = await balance_of(client, customer)
    made = {
        action: await reimagined(
            client, customer, {"task_id": source, "index": 1, "action": action}
        )
        for action in ("upscale", "variation", "reroll")
    }
    assert len(set(made.values())) == 3 and source not in made.values()
    prices = {"upscale": IMAGE_UPSCALE_PRICE, "variation": source_cost, "reroll": source_cost}
    assert await balance_of(client, customer) == balance - sum(prices.values())
    ledger = await ledger_of(runtime, customer)
    for action, task_id in made.items():
        assert movements_of(ledger, task_id) == [("hold", -prices[action])]
        await assert_lineage_everywhere(client, customer, task_id, source, action, 1)
        # waiting still: the lineage is there from the start
        assert (await item_of(client, customer, task_id))["status"] == 0
    async with worker_running(runtime):
        for task_id in made.values():
            await finished(client, customer, task_id)
    ledger = await ledger_of(runtime, customer)
    for action, task_id in made.items():
        item = await item_of(client, customer, task_id)
        assert item["status"] == 2 and item["cost"] == prices[action]
        assert len(item["response"]["assets"]) == 1
        assert movements_of(ledger, task_id) == [("hold", -prices[action]), ("settle", 0)]
        await assert_lineage_everywhere(client, customer, task_id, source, action, 1)
    assert await balance_of(client, customer) == balance - sum(prices.values())
    # The source itself has no lineage, and its own credits were not touched again.
    await assert_lineage_everywhere(client, customer, source, None, None, None)
    assert movements_of(ledger, source) == [("hold", -source_cost), ("settle", 0)]
    # gpt-image-1 takes images: the variation stays on it, the reroll too, the style kept.
    assert (await item_of(client, customer, made["variation"]))["model"] == "gpt-image-1"
    assert (await item_of(client, customer, made["reroll"]))["model"] == "gpt-image-1"
    for action in ("variation", "reroll"):
        assert (await item_of(client, customer, made[action]))["style"] == "watercolor"
    assert (await item_of(client, customer, made["upscale"]))["style"] == ""


async def test_variation_runs_image_to_image_from_the_asset(
    roomy_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = roomy_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime, credits=200)
    # gpt-image-2-text-to-image takes no images: a variation goes to the image model.
    source = await completed(
        runtime, client, customer, {"prompt": "a lighthouse", "aspect_ratio": "3:2", **LOW}
    )
    source_param = await param_of(client, customer, source)
    asset = await asset_of(client, customer, source)
    kept = await reimagined(
        client, customer, {"task_id": source, "index": 1, "action": "variation"}
    )
    reworded = await reimagined(
        client,
        customer,
        {"task_id": source, "index": 1, "action": "variation", "prompt": "a lighthouse at night"},
    )
    for task_id, prompt in ((kept, "a lighthouse"), (reworded, "a lighthouse at night")):
        param = await param_of(client, customer, task_id)
        assert param["model"] == "gpt-image-2-image-to-image"
        assert runtime.settings.imagine_image_model == "gpt-image-2-image-to-image"
        inputs = param["input"]
        assert inputs["prompt"] == prompt
        [url] = inputs["input_urls"]
        assert names_asset(url, asset), url
        # The source's own parameters came along.
        assert inputs["quality"] == source_param["input"]["quality"] == "low"
        assert inputs["aspect_ratio"] == source_param["input"]["aspect_ratio"] == "3:2"
        item = await item_of(client, customer, task_id)
        assert item["model"] == "gpt-image-2-image-to-image"
        assert item["request"]["model"] == "gpt-image-2-image-to-image"
        assert item["request"]["action"] == "variation"
    async with worker_running(runtime):
        for task_id in (kept, reworded):
            await finished(client, customer, task_id)
    for task_id in (kept, reworded):
        varied = await asset_of(client, customer, task_id)
        assert varied["sha256"] != asset["sha256"]
        assert varied["contentType"].startswith("image/")


async def test_variation_with_a_style_keeps_the_style_on_the_new_prompt(
    roomy_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = roomy_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime, credits=200)
    source = await completed(
        runtime, client, customer, {"style": "product", "prompt": "a teapot", **LOW}
    )
    source_param = await param_of(client, customer, source)
    kept = await reimagined(
        client, customer, {"task_id": source, "index": 1, "action": "variation"}
    )
    reworded = await reimagined(
        client,
        customer,
        {"task_id": source, "index": 1, "action": "variation", "prompt": "a kettle"},
    )
    kept_prompt = (await param_of(client, customer, kept))["input"]["prompt"]
    assert kept_prompt == source_param["input"]["prompt"]  # the style's words once, not twice
    assert kept_prompt.startswith("a teapot, studio product photograph")
    new_prompt = (await param_of(client, customer, reworded))["input"]["prompt"]
    assert new_prompt.startswith("a kettle, studio product photograph")
    for task_id in (kept, reworded):
        assert (await item_of(client, customer, task_id))["style"] == "product"


async def test_reroll_runs_the_same_model_style_and_parameters_again(
    roomy_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = roomy_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime, credits=200)
    source = await completed(
        runtime,
        client,
        customer,
        {"style": "product", "prompt": "a teapot", "aspect_ratio": "16:9", **LOW},
    )
    source_item = await item_of(client, customer, source)
    source_param = await param_of(client, customer, source)
    rerolled = await reimagined(
        client, customer, {"task_id": source, "index": 1, "action": "reroll"}
    )
    param = await param_of(client, customer, rerolled)
    # The model and every input, the style's words included (our files signed anew).
    assert unsigned(param) == unsigned(source_param)
    item = await item_of(client, customer, rerolled)
    assert item["model"] == source_item["model"] == "gpt-image-2-text-to-image"
    assert item["style"] == source_item["style"] == "product"
    assert item["cost"] == source_item["cost"]
    # A new prompt replaces the old one; the style and parameters stay.
    reworded = await reimagined(
        client,
        customer,
        {"task_id": source, "index": 1, "action": "reroll", "prompt": "a kettle"},
    )
    reworded_param = await param_of(client, customer, reworded)
    assert reworded_param["input"]["prompt"].startswith("a kettle, studio product photograph")
    assert {k: v for k, v in unsigned(reworded_param)["input"].items() if k != "prompt"} == {
        k: v for k, v in unsigned(source_param)["input"].items() if k != "prompt"
    }
    async with worker_running(runtime):
        for task_id in (rerolled, reworded):
            await finished(client, customer, task_id)
    again = await asset_of(client, customer, rerolled)
    first = await asset_of(client, customer, source)
    assert (again["width"], again["height"]) == (first["width"], first["height"])


async def test_a_chain_three_deep_keeps_each_parent(
    roomy_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = roomy_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime, credits=200)
    root = await completed(runtime, client, customer, {"prompt": "a fox in snow", **LOW})
    steps = ("variation", "reroll", "variation")
    chain = [root]
    async with worker_running(runtime):
        for action in steps:
            child = await reimagined(
                client, customer, {"task_id": chain[-1], "index": 1, "action": action}
            )
            await finished(client, customer, child)
            chain.append(child)
    assert len(set(chain)) == 4
    page = await listed(client, customer)
    assert set(page) == set(chain) and all(task["status"] == 2 for task in page.values())
    await assert_lineage_everywhere(client, customer, root, None, None, None)
    for parent, child, action in zip(chain[:-1], chain[1:], steps, strict=True):
        await assert_lineage_everywhere(client, customer, child, parent, action, 1)
    # Every step is image-to-image or its reroll: the fox is asked for all the way down.
    for task_id in chain[1:]:
        param = await param_of(client, customer, task_id)
        assert param["model"] == "gpt-image-2-image-to-image"
        assert param["input"]["prompt"] == "a fox in snow"
    # The reroll of a variation reads the same asset its parent was given.
    variation, reroll = (
        await param_of(client, customer, chain[1]),
        await param_of(client, customer, chain[2]),
    )
    assert unsigned(reroll)["input"] == unsigned(variation)["input"]
    assert names_asset(variation["input"]["input_urls"][0], await asset_of(client, customer, root))
    last = await param_of(client, customer, chain[3])
    assert names_asset(last["input"]["input_urls"][0], await asset_of(client, customer, chain[2]))


async def test_a_task_made_by_create_task_can_be_reimagined(
    roomy_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = roomy_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime, credits=200)
    made = await create_task(
        client,
        customer,
        {"model": "gpt-image-1", "input": {"prompt": "a paper boat", "aspect_ratio": "3:2", **LOW}},
    )
    async with worker_running(runtime):
        await finished(client, customer, made)
        asset = await asset_of(client, customer, made)
        # and one with an input image: the reroll gives the model the same file again
        edited = await create_task(
            client,
            customer,
            {
                "model": "gpt-image-2-image-to-image",
                "input": {"prompt": "make it blue", "input_urls": [asset["url"]], **LOW},
            },
        )
        await finished(client, customer, edited)
        children = {
            (task_id, action): await reimagined(
                client, customer, {"task_id": task_id, "index": 1, "action": action}
            )
            for task_id in (made, edited)
            for action in ("reroll", "variation", "upscale")
        }
        for child in children.values():
            await finished(client, customer, child)
    for (parent, action), child in children.items():
        await assert_lineage_everywhere(client, customer, child, parent, action, 1)
    for parent in (made, edited):
        source_param = await param_of(client, customer, parent)
        rerolled = await param_of(client, customer, children[parent, "reroll"])
        assert unsigned(rerolled) == unsigned(source_param)
        item = await item_of(client, customer, children[parent, "reroll"])
        assert item["style"] == ""
        varied = await param_of(client, customer, children[parent, "variation"])
        assert varied["model"] == source_param["model"]  # both take images
        assert varied["input"]["prompt"] == source_param["input"]["prompt"]
        assert names_asset(
            varied["input"]["input_urls"][0], await asset_of(client, customer, parent)
        )
    # The same upload, signed again to outlive the reroll.
    (reread,) = (await param_of(client, customer, children[edited, "reroll"]))["input"][
        "input_urls"
    ]
    assert reread != asset["url"] and reread.split("?")[0] == asset["url"].split("?")[0]
    assert (await client.get(reread)).status_code == 200


# --------------------------------------------------------------------------- refusals


@dataclass
class World:
    """A completed image task of `customer`'s, and what must not move when a call is refused."""

    app: FastAPI
    client: httpx.AsyncClient
    customer: Customer
    source: str

    @property
    def runtime(self) -> Runtime:
        return runtime_of(self.app)

    async def snapshot(self) -> tuple[int, int, int]:
        """(tasks, ledger rows, balance) of the customer."""
        return (
            await tasks_of(self.runtime, self.customer),
            len(await ledger_of(self.runtime, self.customer)),
            await balance_of(self.client, self.customer),
        )


@pytest.fixture
async def world(roomy_app: tuple[FastAPI, httpx.AsyncClient]) -> World:
    app, client = roomy_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime, credits=100)
    source = await completed(runtime, client, customer, {"prompt": "a lighthouse", **LOW})
    return World(app, client, customer, source)


def refusal(response: httpx.Response, status: int) -> str:
    """The message of a refusal, checked to be the seed's shape and nothing else."""
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == {"message"} and isinstance(answer["message"], str), answer
    message: str = answer["message"]
    return message


SOURCE = "<source>"  # replaced by the completed task's id


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"task_id": SOURCE, "index": 0, "action": "upscale"}, "index", None),
        ({"task_id": SOURCE, "index": -1, "action": "upscale"}, "index", None),
        (
            {"task_id": SOURCE, "index": 2, "action": "upscale"},
            "index",
            "index must be from 1 to 1, the task's assets",
        ),
        ({"task_id": SOURCE, "index": 99, "action": "variation"}, "index", None),
        ({"task_id": SOURCE, "index": "1", "action": "upscale"}, "index", None),
        ({"task_id": SOURCE, "index": 1.5, "action": "upscale"}, "index", None),
        ({"task_id": SOURCE, "index": True, "action": "upscale"}, "index", None),
        ({"task_id": SOURCE, "index": [1], "action": "upscale"}, "index", None),
        ({"task_id": SOURCE, "index": None, "action": "upscale"}, "index", "index is required"),
        ({"task_id": SOURCE, "action": "upscale"}, "index", "index is required"),
        ({"index": 1, "action": "upscale"}, "task_id", "task_id is required"),
        ({"task_id": "", "index": 1, "action": "upscale"}, "task_id", "task_id is required"),
        ({"task_id": 7, "index": 1, "action": "upscale"}, "task_id", None),
        ({"task_id": SOURCE, "index": 1}, "action", "action is required"),
        (
            {"task_id": SOURCE, "index": 1, "action": "zoom"},
            "action",
            "action must be one of upscale, variation, reroll",
        ),
        ({"task_id": SOURCE, "index": 1, "action": "Upscale"}, "action", None),
        ({"task_id": SOURCE, "index": 1, "action": 1}, "action", None),
        ({"task_id": SOURCE, "index": 1, "action": "upscale", "scale": 4}, "scale", None),
        ({"task_id": SOURCE, "index": 1, "action": "reroll", "n": 2}, "n", None),
        (
            {"task_id": SOURCE, "index": 1, "action": "upscale", "prompt": "sharper"},
            "prompt",
            "prompt: model image-upscale takes no prompt",
        ),
        (
            {
                "task_id": SOURCE,
                "index": 1,
                "action": "upscale",
                "reference": ["https://example.com/a.png"],
            },
            "reference",
            "reference: upscale works on the source asset alone; give no reference",
        ),
        ({"task_id": SOURCE, "index": 1, "action": "variation", "prompt": 5}, "prompt", None),
        (
            {"task_id": SOURCE, "index": 1, "action": "variation", "reference": "https://a.b/c"},
            "reference",
            None,
        ),
        (
            {"task_id": SOURCE, "index": 1, "action": "variation", "reference": ["not a url"]},
            "reference",
            None,
        ),
        (
            {
                "task_id": SOURCE,
                "index": 1,
                "action": "variation",
                "callback_url": "http://127.0.0.1/hook",
            },
            "callback_url",
            None,
        ),
        ([SOURCE, 1, "upscale"], "body", None),
    ],
)
async def test_bad_requests_name_the_field_and_create_nothing(
    world: World, body: Any, field: str, message: str | None
) -> None:
    before = await world.snapshot()
    if isinstance(body, dict):
        body = {k: world.source if v == SOURCE else v for k, v in body.items()}
    else:
        body = [world.source if v == SOURCE else v for v in body]
    answer = refusal(await reimagine(world.client, world.customer, body), 400)
    if message is not None:
        assert answer == message
    assert field in answer, answer
    assert await world.snapshot() == before


async def test_unknown_and_other_keys_tasks_are_not_found(world: World) -> None:
    before = await world.snapshot()
    for task_id in ("no-such-task", "00000000-0000-0000-0000-000000000000", "x" * 500):
        response = await reimagine(
            world.client, world.customer, {"task_id": task_id, "index": 1, "action": "upscale"}
        )
        assert refusal(response, 404) == "task not found"
    stranger = await make_customer(world.runtime, credits=100)
    for action in ("upscale", "variation", "reroll"):
        response = await reimagine(
            world.client, stranger, {"task_id": world.source, "index": 1, "action": action}
        )
        assert refusal(response, 404) == "task not found"
    assert await world.snapshot() == before
    assert await tasks_of(world.runtime, stranger) == 0
    assert await balance_of(world.client, stranger) == 100
    # Another key of the same account sees only its own tasks too.
    async with world.runtime.sessions() as session:
        _key, plain = await create_api_key(
            session, account_id=world.customer.account.id, name="sibling", tier="standard"
        )
        await session.commit()
    sibling = Customer(world.customer.account, plain)
    response = await reimagine(
        world.client, sibling, {"task_id": world.source, "index": 1, "action": "reroll"}
    )
    assert refusal(response, 404) == "task not found"
    assert await world.snapshot() == before


async def test_a_source_not_completed_is_refused_naming_task_id(world: World) -> None:
    queued = await imagined(world.client, world.customer, {"prompt": "a harbour", **LOW})
    before = await world.snapshot()
    for action in ("upscale", "variation", "reroll"):
        response = await reimagine(
            world.client, world.customer, {"task_id": queued, "index": 1, "action": action}
        )
        answer = refusal(response, 400)
        assert answer.startswith("task_id"), answer
        assert "completed" in answer, answer
    assert await world.snapshot() == before


async def test_a_failed_source_is_refused_naming_task_id(roomy: Settings) -> None:
    async with running_app(roomy.model_copy(update={"local_fault_injection": True})) as pair:
        app, client = pair
        runtime = runtime_of(app)
        customer = await make_customer(runtime, credits=100)
        failed = await imagined(
            client, customer, {"prompt": "a harbour [[fail:provider_error]]", **LOW}
        )
        async with worker_running(runtime):
            done = await wait_for_terminal(client, customer.headers, failed)
        assert done["state"] == "fail", done
        tasks, balance = await tasks_of(runtime, customer), await balance_of(client, customer)
        response = await reimagine(
            client, customer, {"task_id": failed, "index": 1, "action": "reroll"}
        )
        assert refusal(response, 400).startswith("task_id"), response.text
        assert await tasks_of(runtime, customer) == tasks
        assert await balance_of(client, customer) == balance


async def test_a_video_can_be_rerolled_but_not_upscaled_or_varied(
    roomy_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = roomy_app
    runtime = runtime_of(app)
    assert runtime.settings.imagine_video_upscale_model is None
    customer = await make_customer(runtime, credits=100)
    video = await completed(runtime, client, customer, VIDEO)
    assert (await asset_of(client, customer, video))["contentType"].startswith("video/")
    tasks, balance = await tasks_of(runtime, customer), await balance_of(client, customer)
    for action in ("upscale", "variation"):
        response = await reimagine(
            client, customer, {"task_id": video, "index": 1, "action": action}
        )
        answer = refusal(response, 400)
        assert answer.startswith("action"), answer
        assert action in answer and "video" in answer, answer
    assert await tasks_of(runtime, customer) == tasks
    assert await balance_of(client, customer) == balance
    rerolled = await reimagined(
        client, customer, {"task_id": video, "index": 1, "action": "reroll"}
    )
    assert await param_of(client, customer, rerolled) == await param_of(client, customer, video)
    async with worker_running(runtime):
        await finished(client, customer, rerolled)
    await assert_lineage_everywhere(client, customer, rerolled, video, "reroll", 1)


async def test_a_request_id_replay_returns_the_same_task_and_charges_once(world: World) -> None:
    client, customer, runtime = world.client, world.customer, world.runtime
    body = {"task_id": world.source, "index": 1, "action": "upscale"}
    tasks, balance = await tasks_of(runtime, customer), await balance_of(client, customer)
    first = await reimagine(client, customer, body, request_id="up-1")
    again = await reimagine(client, customer, body, request_id="up-1")
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json() == first.json() and len(first.json()["ids"]) == 1
    assert await tasks_of(runtime, customer) == tasks + 1
    assert await balance_of(client, customer) == balance - IMAGE_UPSCALE_PRICE
    [task_id] = first.json()["ids"]
    assert movements_of(await ledger_of(runtime, customer), task_id) == [
        ("hold", -IMAGE_UPSCALE_PRICE)
    ]
    for other in ({**body, "action": "variation"}, {**body, "action": "reroll"}):
        conflict = await reimagine(client, customer, other, request_id="up-1")
        assert refusal(conflict, 409) == "X-Request-Id was already used with different parameters"
    # The same id on /v1/imagine is another request, refused the same way.
    imagine_reuse = await post(client, customer, "/v1/imagine", {"prompt": "a"}, request_id="up-1")
    assert refusal(imagine_reuse, 409) == "X-Request-Id was already used with different parameters"
    assert await tasks_of(runtime, customer) == tasks + 1
    assert await balance_of(client, customer) == balance - IMAGE_UPSCALE_PRICE
    # Another key may use the same id for its own request.
    other_key = await make_customer(runtime, credits=100)
    own = await imagined(client, other_key, {"prompt": "a", **LOW})
    async with worker_running(runtime):
        await finished(client, other_key, own)
        theirs = await reimagine(client, other_key, {**body, "task_id": own}, request_id="up-1")
        assert theirs.status_code == 200, theirs.text
        assert theirs.json()["ids"] != first.json()["ids"]
        await finished(client, customer, task_id)
    # and a replay after the task finished still answers it, charging nothing more
    replay = await reimagine(client, customer, body, request_id="up-1")
    assert replay.status_code == 200 and replay.json() == first.json()
    assert movements_of(await ledger_of(runtime, customer), task_id) == [
        ("hold", -IMAGE_UPSCALE_PRICE),
        ("settle", 0),
    ]
    assert await balance_of(client, customer) == balance - IMAGE_UPSCALE_PRICE


async def test_authentication_and_scope_errors_are_messages(world: World) -> None:
    body = {"task_id": world.source, "index": 1, "action": "upscale"}
    before = await world.snapshot()
    missing = await world.client.post("/v1/reimagine", json=body)
    assert refusal(missing, 401) == "authentication failed"
    reader = await make_customer(world.runtime, scopes=["tasks:read"])
    refusal(await reimagine(world.client, reader, body), 403)
    assert await world.snapshot() == before


async def test_a_reroll_long_after_its_parent_still_reads_the_asset(
    roomy_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """A variation holds a signed URL of the asset it varied; a reroll of it hours later
    must not hand the model that URL once it has expired."""
    app, client = roomy_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime, credits=200)
    source = await completed(runtime, client, customer, {"prompt": "a fox in snow", **LOW})
    async with worker_running(runtime):
        variation = await reimagined(
            client, customer, {"task_id": source, "index": 1, "action": "variation"}
        )
        await finished(client, customer, variation)
    # Arrange what two hours would make: the variation was created then, and the URL it was
    # given (valid for the model's timeout and a media URL's life) has expired since.
    two_hours_ago_ms = now_ms() - 2 * 3600 * 1000
    timeout_s = runtime.catalog.get("gpt-image-2-image-to-image").timeout_seconds
    expired_at_s = two_hours_ago_ms // 1000 + timeout_s + runtime.settings.media_url_ttl_seconds
    asset_id = (await asset_of(client, customer, source))["id"]
    async with runtime.sessions() as session:
        task = await session.get(Task, variation)
        asset = await session.get(MediaFile, asset_id)
        assert task is not None and asset is not None
        inputs = json.loads(task.input_json)
        inputs["input_urls"] = [
            signed_media_url(
                asset,
                base_url="http://testserver",
                secret=runtime.signing_secret,
                expires_at_s=expired_at_s,
            )
        ]
        await session.execute(
            update(Task)
            .where(col(Task.id) == variation)
            .values(input_json=json.dumps(inputs), created_at=two_hours_ago_ms)
        )
        await session.commit()
    rerolled = await reimagined(
        client, customer, {"task_id": variation, "index": 1, "action": "reroll"}
    )
    async with worker_running(runtime):
        await finished(client, customer, rerolled)
    [url] = (await param_of(client, customer, rerolled))["input"]["input_urls"]
    assert names_asset(url, await asset_of(client, customer, source))


async def test_concurrent_duplicates_create_one_task(world: World) -> None:
    client, customer, runtime = world.client, world.customer, world.runtime
    body = {"task_id": world.source, "index": 1, "action": "reroll"}
    tasks, balance = await tasks_of(runtime, customer), await balance_of(client, customer)
    cost = (await item_of(client, customer, world.source))["cost"]
    answers = await asyncio.gather(
        *(reimagine(client, customer, body, request_id="same") for _ in range(6))
    )
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    assert len({tuple(answer.json()["ids"]) for answer in answers}) == 1
    assert await tasks_of(runtime, customer) == tasks + 1
    assert await balance_of(client, customer) == balance - cost


async def test_a_variation_of_an_upscale_redraws_with_the_image_model(world: World) -> None:
    """An upscaler takes an image but draws nothing new: a variation of its result is made
    by the image-to-image model, with the prompt given."""
    client, customer, runtime = world.client, world.customer, runtime_of(world.app)
    upscaled = await reimagined(
        client, customer, {"task_id": world.source, "index": 1, "action": "upscale"}
    )
    async with worker_running(runtime):
        await finished(client, customer, upscaled)
        varied = await reimagined(
            client,
            customer,
            {"task_id": upscaled, "index": 1, "action": "variation", "prompt": "at dusk"},
        )
        await finished(client, customer, varied)
    param = await param_of(client, customer, varied)
    assert param["model"] == "gpt-image-2-image-to-image"
    assert param["input"]["prompt"] == "at dusk"
    assert names_asset(param["input"]["input_urls"][0], await asset_of(client, customer, upscaled))
    assert_lineage(await item_of(client, customer, varied), upscaled, "variation", 1)
