"""GET /v1/assets/{id}: each result file of a task, with a fresh signed URL."""

import hashlib
import io

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from tests.conftest import Customer, make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import runtime_of, wait_for_terminal
from tests.uploads.conftest import image_bytes
from tests.v1.conftest import create_task


async def test_a_result_file_is_an_asset(app: FastAPI, client: httpx.AsyncClient) -> None:
    customer = await make_customer(runtime_of(app))
    task_id = await create_task(
        client, customer, t2i("asset", resolution="1024x1536", output_format="jpeg")
    )
    await wait_for_terminal(client, customer.headers, task_id)
    item = (await client.get(f"/v1/tasks/{task_id}", headers=customer.headers)).json()
    (asset_id,) = item["response"]["assets"]

    response = await client.get(f"/v1/assets/{asset_id}", headers=customer.headers)
    assert response.status_code == 200, response.text
    asset = response.json()
    assert set(asset) == {
        "id",
        "taskId",
        "index",
        "url",
        "contentType",
        "width",
        "height",
        "duration",
        "bytes",
        "sha256",
    }
    assert (asset["id"], asset["taskId"], asset["index"]) == (asset_id, task_id, 1)
    assert (asset["contentType"], asset["width"], asset["height"]) == ("image/jpeg", 1024, 1536)
    assert asset["duration"] is None
    download = await client.get(asset["url"])
    assert download.status_code == 200
    assert len(download.content) == asset["bytes"]
    assert hashlib.sha256(download.content).hexdigest() == asset["sha256"]
    assert Image.open(io.BytesIO(download.content)).size == (1024, 1536)

    other = await make_customer(runtime_of(app))
    foreign = await client.get(f"/v1/assets/{asset_id}", headers=other.headers)
    assert (foreign.status_code, foreign.json()) == (404, {"message": "asset not found"})
    # A task's id is not an asset's.
    wrong = await client.get(f"/v1/assets/{task_id}", headers=customer.headers)
    assert wrong.status_code == 404


async def test_an_upload_is_not_an_asset(client: httpx.AsyncClient, customer: Customer) -> None:
    files = {"file": ("photo.png", image_bytes(), "image/png")}
    uploaded = await client.post("/api/v1/files", files=files, headers=customer.headers)
    assert uploaded.status_code == 200, uploaded.text
    upload_id = uploaded.json()["data"]["id"]
    response = await client.get(f"/v1/assets/{upload_id}", headers=customer.headers)
    assert (response.status_code, response.json()) == (404, {"message": "asset not found"})


async def test_a_video_asset_has_its_duration_and_frame_size(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    customer = await make_customer(runtime_of(app))
    body = {
        "model": "seedance-2.0-text-to-video",
        "input": {"prompt": "waves", "resolution": "480p", "duration": "5"},
    }
    task_id = await create_task(client, customer, body)
    assert (await wait_for_terminal(client, customer.headers, task_id))["state"] == "success"
    item = (await client.get(f"/v1/tasks/{task_id}", headers=customer.headers)).json()
    assert item["status"] == 2
    (asset_id,) = item["response"]["assets"]
    asset = (await client.get(f"/v1/assets/{asset_id}", headers=customer.headers)).json()
    assert asset["contentType"] == "video/mp4"
    # A video knows its frame size too: 480p at the default 16:9.
    assert asset["height"] == 480 and abs(asset["width"] / 480 - 16 / 9) < 0.02
    assert asset["duration"] == pytest.approx(5, abs=0.5)
