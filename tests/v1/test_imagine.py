"""POST /v1/imagine (seed 004): n tasks all or none, model choice, styles, idempotent groups,
rate limits counting n, and every refusal in the seed's {"message"} shape."""

import asyncio
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.config import Settings, TierLimits
from app.jobs.models import Task
from tests.conftest import Customer, make_customer
from tests.support.apps import running_app, runtime_of, wait_for_terminal, worker_running
from tests.v1.conftest import balance_of, ledger_of, tasks_of

# The seed's example request, verbatim.
SEED_EXAMPLE = {
    "n": 2,
    "model": "gpt-image-1",
    "style": "",
    "prompt": "A beautiful sunset over mountain peaks",
    "reference": ["https://example.com/ref1.jpg", "https://example.com/ref2.jpg"],
}
ROOMY = {
    "standard": TierLimits(create_per_minute=1000, query_per_minute=1000, max_active_tasks=100),
    "tight": TierLimits(create_per_minute=10, query_per_minute=1000, max_active_tasks=100),
}


async def imagine(
    client: httpx.AsyncClient,
    customer: Customer,
    body: dict[str, Any],
    *,
    request_id: str | None = None,
) -> httpx.Response:
    headers = dict(customer.headers)
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return await client.post("/v1/imagine", json=body, headers=headers)


async def record(client: httpx.AsyncClient, customer: Customer, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/tasks/{task_id}", headers=customer.headers)
    assert response.status_code == 200, response.text
    item: dict[str, Any] = response.json()
    return item


@pytest.fixture
def roomy(settings: Settings) -> Settings:
    return settings.model_copy(update={"tiers": ROOMY, "workers_in_process": False})


async def test_seed_example_verbatim(idle_app: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    # curl -X POST https://api.imgmcp.com/v1/imagine -H "Authorization: Bearer <Your API Key>"
    #   -H "Content-Type: application/json" -d '{...the seed example...}'
    response = await client.post(
        "/v1/imagine",
        content=json.dumps(SEED_EXAMPLE),
        headers={"Authorization": f"Bearer {customer.key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"ids"} and len(body["ids"]) == 2 and len(set(body["ids"])) == 2
    for task_id in body["ids"]:
        item = await record(client, customer, task_id)
        assert item["model"] == "gpt-image-1" and item["style"] == ""
        assert item["request"] == SEED_EXAMPLE  # what the caller sent, model and n included
        assert item["status"] == 0 and item["cost"] == 5
        assert item["parentTaskId"] is None and item["action"] is None


async def test_model_is_chosen_from_the_request_and_recorded(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    text = await imagine(client, customer, {"prompt": "a lighthouse"})
    image = await imagine(
        client, customer, {"prompt": "in blue", "reference": ["https://example.com/a.png"]}
    )
    assert text.status_code == image.status_code == 200, (text.text, image.text)
    made_from_text = await record(client, customer, text.json()["ids"][0])
    made_from_image = await record(client, customer, image.json()["ids"][0])
    assert made_from_text["model"] == "gpt-image-2-text-to-image"
    assert made_from_text["request"] == {
        "n": 1,
        "model": "gpt-image-2-text-to-image",
        "prompt": "a lighthouse",
    }
    assert made_from_image["model"] == "gpt-image-2-image-to-image"
    assert made_from_image["request"]["model"] == "gpt-image-2-image-to-image"
    # The reference went to the model's image input.
    info = await client.get(
        "/api/v1/jobs/recordInfo",
        params={"taskId": image.json()["ids"][0]},
        headers=customer.headers,
    )
    param = json.loads(info.json()["data"]["param"])
    assert param["input"]["input_urls"] == ["https://example.com/a.png"]


async def test_a_style_shapes_the_prompt_and_fills_defaults(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    styled = await imagine(client, customer, {"style": "product", "prompt": "a teapot"})
    overridden = await imagine(
        client, customer, {"style": "product", "prompt": "a teapot", "quality": "low"}
    )
    assert styled.status_code == overridden.status_code == 200
    async with runtime.sessions() as session:
        first = await session.get(Task, styled.json()["ids"][0])
        second = await session.get(Task, overridden.json()["ids"][0])
    assert first is not None and second is not None
    inputs = json.loads(first.input_json)
    assert inputs["prompt"].startswith("a teapot, studio product photograph")
    assert inputs["quality"] == "high" and inputs["aspect_ratio"] == "1:1"  # the style's
    assert json.loads(second.input_json)["quality"] == "low"  # the caller's wins
    assert first.price == 2 * second.price * 2  # high is x2, low is x0.5
    item = await record(client, customer, first.id)
    assert item["style"] == "product"
    assert item["request"]["prompt"] == "a teapot"  # as the caller wrote it


async def test_n_eight_holds_eight_and_settles_eight(roomy: Settings) -> None:
    async with running_app(roomy) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime, credits=100)
        response = await imagine(client, customer, {"n": 8, "prompt": "a fox", "quality": "low"})
        assert response.status_code == 200, response.text
        ids = response.json()["ids"]
        assert len(ids) == len(set(ids)) == 8
        price = 2  # base 4 x low 0.5
        assert await balance_of(client, customer) == 100 - 8 * price
        held = await ledger_of(runtime, customer)
        assert sorted(t for k, _, t in held if k == "hold") == sorted(ids)
        assert all(amount == -price for kind, amount, _ in held if kind == "hold")
        async with worker_running(runtime):
            for task_id in ids:
                done = await wait_for_terminal(client, customer.headers, task_id)
                assert done["state"] == "success", done
        settled = await ledger_of(runtime, customer)
        assert sorted(t for k, _, t in settled if k == "settle") == sorted(ids)
        assert await balance_of(client, customer) == 100 - 8 * price
        page = (await client.get("/v1/tasks", headers=customer.headers)).json()
        assert page["total"] == 8 and {t["status"] for t in page["tasks"]} == {2}
        assert all(len(t["response"]["assets"]) == 1 for t in page["tasks"])


async def test_credits_for_some_of_the_tasks_create_none(roomy: Settings) -> None:
    async with running_app(roomy) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime, credits=3 * 4 + 3)  # 3 of 4, not the 4th
        response = await imagine(client, customer, {"n": 4, "prompt": "a fox"})
        assert response.status_code == 402
        assert response.json() == {"message": "insufficient credits"}
        assert await tasks_of(runtime, customer) == 0
        assert [k for k, _, _ in await ledger_of(runtime, customer)] == ["grant"]
        assert await balance_of(client, customer) == 15
        # and the same request that fits is taken whole
        fits = await imagine(client, customer, {"n": 3, "prompt": "a fox"})
        assert fits.status_code == 200 and len(fits.json()["ids"]) == 3
        assert await balance_of(client, customer) == 3


async def test_a_request_id_makes_the_group_one_request(roomy: Settings) -> None:
    async with running_app(roomy) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime, credits=100)
        body = {"n": 3, "prompt": "a fox"}
        first = await imagine(client, customer, body, request_id="group-1")
        again = await imagine(client, customer, body, request_id="group-1")
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json() and len(first.json()["ids"]) == 3
        assert await tasks_of(runtime, customer) == 3
        assert await balance_of(client, customer) == 100 - 3 * 4
        other = await imagine(client, customer, {"n": 2, "prompt": "a fox"}, request_id="group-1")
        assert other.status_code == 409
        assert other.json() == {
            "message": "X-Request-Id was already used with different parameters"
        }
        # A replay is answered even when the credits would no longer cover it.
        poor = await make_customer(runtime, credits=12)
        made = await imagine(client, poor, body, request_id="r")
        replay = await imagine(client, poor, body, request_id="r")
        assert made.status_code == replay.status_code == 200 and made.json() == replay.json()


async def test_n_counts_as_n_creations_against_the_rate_limit(roomy: Settings) -> None:
    async with running_app(roomy) as (app, client):
        customer = await make_customer(runtime_of(app), tier="tight")  # 10 a minute
        assert (await imagine(client, customer, {"n": 8, "prompt": "a"})).status_code == 200
        refused = await imagine(client, customer, {"n": 3, "prompt": "a"})
        assert refused.status_code == 429
        assert refused.json() == {"message": "rate limit exceeded"}
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["RateLimit-Limit"] == "10"
        assert (await imagine(client, customer, {"n": 2, "prompt": "a"})).status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"n": 0, "prompt": "a"}, "n must be an integer from 1 to 8"),
        ({"n": 9, "prompt": "a"}, "n must be an integer from 1 to 8"),
        ({"n": True, "prompt": "a"}, "n must be an integer from 1 to 8"),
        ({"n": "2", "prompt": "a"}, "n must be an integer from 1 to 8"),
        ({"model": 7, "prompt": "a"}, "model must be a string"),
        ({"model": "nope", "prompt": "a"}, "model is not supported"),
        (
            {"style": "nope", "prompt": "a"},
            "style must be one of photo, watercolor, anime, cinematic, product, or empty for none",
        ),
        ({"prompt": 5}, "prompt must be a string"),
        (
            {"prompt": "a", "reference": "https://example.com/a.png"},
            "reference must be an array of URL strings",
        ),
        ({"prompt": "a", "reference": ["not a url"]}, None),
        ({"prompt": "a", "reference": ["https://example.com/1.png"] * 5}, None),
        (
            {
                "model": "seedance-2.0-text-to-video",
                "prompt": "a",
                "reference": ["https://example.com/a.png"],
            },
            "reference: model seedance-2.0-text-to-video takes no reference",
        ),
        (
            {"model": "image-upscale", "prompt": "a", "reference": ["https://example.com/a.png"]},
            "prompt: model image-upscale takes no prompt",
        ),
        ({"model": "gpt-image-1"}, "prompt is required"),
        ({"prompt": "a", "quality": "ultra"}, None),
        ({"prompt": "a", "colour": "red"}, None),
        ({"prompt": "a", "reference": ["http://127.0.0.1/a.png"]}, None),
        ({"prompt": "a", "callback_url": "http://127.0.0.1/hook"}, None),
        ([1, 2], "request body must be a JSON object"),
    ],
)
async def test_bad_requests_name_the_field_and_create_nothing(
    idle_app: tuple[FastAPI, httpx.AsyncClient], body: Any, message: str | None
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    response = await client.post("/v1/imagine", json=body, headers=customer.headers)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert set(answer) == {"message"}
    if message is not None:
        assert answer["message"] == message
    else:  # the catalog's or the address guard's words; the field the caller wrote
        named = next(k for k in ("reference", "quality", "colour", "callback_url") if k in body)
        assert named in answer["message"], answer
    assert await tasks_of(runtime, customer) == 0
    assert await balance_of(client, customer) == 1000


async def test_authentication_and_scope_errors_are_messages(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    missing = await client.post("/v1/imagine", json={"prompt": "a"})
    assert missing.status_code == 401 and missing.json() == {"message": "authentication failed"}
    reader = await make_customer(runtime_of(app), scopes=["tasks:read"])
    refused = await imagine(client, reader, {"prompt": "a"})
    assert refused.status_code == 403 and set(refused.json()) == {"message"}


async def test_styles_are_listed_for_callers(idle_app: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    response = await client.get("/v1/styles", headers=customer.headers)
    assert response.status_code == 200
    styles = {s["name"]: s for s in response.json()["styles"]}
    assert list(styles) == ["photo", "watercolor", "anime", "cinematic", "product"]
    assert styles["product"]["params"] == {"aspect_ratio": "1:1", "quality": "high"}
    assert "{prompt}" in styles["product"]["prompt"] and styles["product"]["description"]
    assert (await client.get("/v1/styles")).json() == {"message": "authentication failed"}


async def test_concurrent_replays_of_one_group_create_it_once(roomy: Settings) -> None:
    async with running_app(roomy) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime, credits=100)
        body = {"n": 4, "prompt": "a fox"}
        answers = await asyncio.gather(
            *(imagine(client, customer, body, request_id="same") for _ in range(6))
        )
        assert {r.status_code for r in answers} == {200}
        assert len({tuple(r.json()["ids"]) for r in answers}) == 1
        assert await tasks_of(runtime, customer) == 4
        assert await balance_of(client, customer) == 100 - 4 * 4
        held = [k for k, _, _ in await ledger_of(runtime, customer) if k == "hold"]
        assert len(held) == 4


async def test_the_three_routes_are_documented_with_the_seeds_examples(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _app, client = idle_app
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    imagine_body = paths["/v1/imagine"]["post"]["requestBody"]["content"]["application/json"]
    assert imagine_body["example"] == SEED_EXAMPLE
    assert imagine_body["schema"] == {"$ref": "#/components/schemas/Imagine"}
    variants = document["components"]["schemas"]["Imagine"]["oneOf"]
    assert "gpt-image-1" in [v["title"] for v in variants]
    reimagine_body = paths["/v1/reimagine"]["post"]["requestBody"]["content"]["application/json"]
    assert reimagine_body["example"] == {"task_id": "task-uuid-2", "index": 1, "action": "upscale"}
    answers = paths["/v1/imagine"]["post"]["responses"]
    assert answers["200"]["content"]["application/json"]["example"] == {
        "ids": ["task-uuid-1", "task-uuid-2"]
    }
    listed = paths["/v1/tasks"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listed["example"]["tasks"][0]["request"]["prompt"] == SEED_EXAMPLE["prompt"]
    for path in ("/v1/imagine", "/v1/reimagine", "/v1/tasks"):
        for status in ("400", "401", "403", "429", "500"):
            operation = next(iter(paths[path].values()))
            assert operation["responses"][status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Message"
            }, (path, status)
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
