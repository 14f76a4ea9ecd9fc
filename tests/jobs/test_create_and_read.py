"""createTask / recordInfo over REST, on the real app with its embedded worker."""

import io
import json

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import func, select

from app.jobs.models import Task
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import runtime_of, wait_for_terminal


async def _create(client: httpx.AsyncClient, customer: Customer, body: dict, **headers: str):  # type: ignore[no-untyped-def]
    return await client.post(
        "/api/v1/jobs/createTask", json=body, headers={**customer.headers, **headers}
    )


async def _balance(client: httpx.AsyncClient, customer: Customer) -> int:
    response = await client.get("/api/v1/account", headers=customer.headers)
    return int(response.json()["data"]["balance"])


async def test_text_to_image_end_to_end(client: httpx.AsyncClient, customer: Customer) -> None:
    created = await _create(
        client,
        customer,
        t2i("A cinematic product photo", aspect_ratio="16:9", quality="high", output_format="webp"),
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert (body["code"], body["msg"]) == (200, "success")
    task_id = body["data"]["taskId"]
    assert body["data"] == {
        "taskId": task_id,
        "model": "gpt-image-2-text-to-image",
        "state": "waiting",
    }

    data = await wait_for_terminal(client, customer.headers, task_id)
    assert data["state"] == "success", data
    assert data["failCode"] is None and data["failMsg"] is None and data["stage"] is None
    assert data["progress"] == 100
    assert data["costTime"] == data["completeTime"] - data["createTime"] >= 0
    assert json.loads(data["param"])["input"]["aspect_ratio"] == "16:9"
    urls = json.loads(data["resultJson"])["resultUrls"]
    assert len(urls) == 1

    image = await client.get(urls[0])
    assert image.status_code == 200 and image.headers["content-type"] == "image/webp"
    picture = Image.open(io.BytesIO(image.content))
    assert picture.format == "WEBP"
    width, height = picture.size
    assert abs(width / height - 16 / 9) < 0.02
    assert data["credits"] > 0
    assert await _balance(client, customer) == 1000 - data["credits"]

    # Every read mints fresh URLs; both work.
    again = await wait_for_terminal(client, customer.headers, task_id)
    fresh = json.loads(again["resultJson"])["resultUrls"][0]
    assert (await client.get(fresh)).content == image.content


async def test_explicit_resolution_is_the_image_size(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    created = await _create(
        client, customer, t2i("size check", resolution="1024x1536", output_format="jpeg")
    )
    data = await wait_for_terminal(client, customer.headers, created.json()["data"]["taskId"])
    url = json.loads(data["resultJson"])["resultUrls"][0]
    picture = Image.open(io.BytesIO((await client.get(url)).content))
    assert (picture.format, picture.size) == ("JPEG", (1024, 1536))


@pytest.mark.parametrize(
    ("body", "status", "msg", "field"),
    [
        ({"input": {"prompt": "x"}}, 400, "model is required", "model"),
        ({"model": "dall-e-9", "prompt": "x"}, 400, "model is not supported", "model"),
        ({"model": "gpt-image-2-text-to-image"}, 400, "prompt is required", "prompt"),
        (
            {"model": "gpt-image-2-image-to-image", "prompt": "x"},
            400,
            "input_urls is required",
            "input_urls",
        ),
        (
            {"model": "seedance-2.0-image-to-video", "prompt": "x"},
            400,
            "image_urls is required",
            "image_urls",
        ),
        (
            {"model": "gpt-image-2-text-to-image", "prompt": "x", "aspect_ratio": "5:1"},
            400,
            None,
            "aspect_ratio",
        ),
        (
            {
                "model": "gpt-image-2-image-to-image",
                "prompt": "x",
                "input_urls": ["http://10.0.0.1/a.png"],
            },
            400,
            None,
            "input_urls",
        ),
        (
            {"model": "gpt-image-2-text-to-image", "prompt": "x", "callBackUrl": "ftp://x/y"},
            400,
            None,
            "callBackUrl",
        ),
        (
            {"model": "gpt-image-2-text-to-image", "input": "prompt"},
            400,
            "input must be an object",
            "input",
        ),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_charged(
    client: httpx.AsyncClient,
    runtime: Runtime,
    customer: Customer,
    body: dict,  # type: ignore[type-arg]
    status: int,
    msg: str | None,
    field: str,
) -> None:
    response = await _create(client, customer, body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["code"] == status and payload["data"]["field"] == field
    if msg is not None:
        assert payload["msg"] == msg
    else:
        assert field in payload["msg"]
    assert await _balance(client, customer) == 1000
    async with runtime.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Task)) == 0


async def test_enum_errors_list_the_allowed_values(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    response = await _create(client, customer, t2i(quality="ultra"))
    data = response.json()["data"]
    assert data["field"] == "quality" and data["allowed"] == ["low", "medium", "high"]


async def test_other_keys_tasks_are_not_found(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    created = await _create(client, customer, t2i())
    task_id = created.json()["data"]["taskId"]
    stranger = await make_customer(runtime)
    for path in ("/api/v1/jobs/recordInfo", "/api/v1/jobs/cancel"):
        method = client.get if path.endswith("recordInfo") else client.post
        response = await method(path, params={"taskId": task_id}, headers=stranger.headers)
        assert response.status_code == 404
        assert response.json()["msg"] == "task not found"
    missing = await client.get("/api/v1/jobs/recordInfo", headers=customer.headers)
    assert missing.status_code == 400 and missing.json()["msg"] == "taskId is required"
    unknown = await client.get(
        "/api/v1/jobs/recordInfo", params={"taskId": "task_nope"}, headers=customer.headers
    )
    assert unknown.status_code == 404 and unknown.json()["msg"] == "task not found"


async def test_insufficient_credits(client: httpx.AsyncClient, runtime: Runtime) -> None:
    poor = await make_customer(runtime, credits=1)
    response = await _create(client, poor, t2i(quality="high"))
    assert response.status_code == 402
    assert response.json()["msg"] == "insufficient credits"
    assert response.json()["data"]["balance"] == 1
    assert await _balance(client, poor) == 1


async def test_estimate_prices_without_creating(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    low = await client.post(
        "/api/v1/jobs/estimate", json=t2i(quality="low"), headers=customer.headers
    )
    high = await client.post(
        "/api/v1/jobs/estimate", json=t2i(quality="high"), headers=customer.headers
    )
    assert low.status_code == 200, low.text
    low_data, high_data = low.json()["data"], high.json()["data"]
    assert 0 < low_data["credits"] < high_data["credits"]
    assert low_data["balance"] == 1000 and low_data["affordable"] is True
    assert low_data["input"]["aspect_ratio"] == "1:1"  # defaults are shown
    bad = await client.post("/api/v1/jobs/estimate", json={"model": "x"}, headers=customer.headers)
    assert bad.status_code == 400 and bad.json()["msg"] == "model is not supported"
    async with runtime.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Task)) == 0
    created = await _create(client, customer, t2i(quality="high"))
    data = await wait_for_terminal(client, customer.headers, created.json()["data"]["taskId"])
    assert data["credits"] == high_data["credits"]


async def test_both_argument_formats_and_callback_spellings(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    direct = await _create(
        client,
        customer,
        {
            "model": "gpt-image-2-text-to-image",
            "prompt": "p",
            "callbackUrl": "https://h.example/cb",
        },
    )
    nested = await _create(
        client,
        customer,
        {
            "model": "gpt-image-2-text-to-image",
            "input": {"prompt": "p"},
            "callBackUrl": "https://h.example/cb",
        },
    )
    params = []
    for response in (direct, nested):
        task_id = response.json()["data"]["taskId"]
        info = await client.get(
            "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=customer.headers
        )
        data = info.json()["data"]
        assert data["state"] == "waiting" and data["stage"] == "queued"
        assert data["queuePosition"] >= 1
        params.append(json.loads(data["param"]))
    assert params[0] == params[1]
    assert params[0]["callBackUrl"] == "https://h.example/cb"


async def test_models_catalog(client: httpx.AsyncClient, customer: Customer) -> None:
    everything = (await client.get("/api/v1/models", headers=customer.headers)).json()["data"]
    ids = {m["id"] for m in everything}
    assert {
        "gpt-image-2-text-to-image",
        "gpt-image-2-image-to-image",
        "seedance-2.0-text-to-video",
        "seedance-2.0-image-to-video",
        "image-upscale",
    } <= ids
    videos = (
        await client.get("/api/v1/models", params={"mediaType": "video"}, headers=customer.headers)
    ).json()["data"]
    assert {m["type"] for m in videos} == {"video"}
    t2i_model = next(m for m in everything if m["id"] == "gpt-image-2-text-to-image")
    assert t2i_model["requiredInputs"] == ["prompt"]
    assert "aspect_ratio" in t2i_model["inputSchema"]["properties"]
    assert t2i_model["pricing"]["base"] > 0
    bad = await client.get(
        "/api/v1/models", params={"mediaType": "audio"}, headers=customer.headers
    )
    assert bad.status_code == 400 and bad.json()["data"]["field"] == "mediaType"
