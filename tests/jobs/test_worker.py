"""Workers: failures, cancel, expiry, a killed worker's task taken over, input images."""

import io
import json
import os
import signal
from pathlib import Path

import av
import httpx
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import select, update

from app.core.config import Settings
from app.core.ids import now_ms
from app.credits.models import LedgerEntry
from app.jobs.models import Task
from app.media.models import MediaFile
from app.providers.local_render import render_text_to_image
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import (
    eventually,
    running_app,
    runtime_of,
    wait_for_terminal,
    worker_running,
)
from tests.support.files import serve_files
from tests.support.server import start_server


async def _create(client: httpx.AsyncClient, customer: Customer, body: dict) -> str:  # type: ignore[type-arg]
    response = await client.post("/api/v1/jobs/createTask", json=body, headers=customer.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["taskId"])


async def _task(runtime: Runtime, task_id: str) -> Task:
    async with runtime.sessions() as s:
        task = await s.get(Task, task_id)
        assert task is not None
        return task


async def _ledger_kinds(runtime: Runtime, task_id: str) -> list[str]:
    async with runtime.sessions() as s:
        rows = await s.execute(
            select(LedgerEntry.kind).where(LedgerEntry.task_id == task_id).order_by(LedgerEntry.id)  # type: ignore[arg-type]
        )
        return list(rows.scalars())


async def _balance(client: httpx.AsyncClient, customer: Customer) -> int:
    return int(
        (await client.get("/api/v1/account", headers=customer.headers)).json()["data"]["balance"]
    )


async def test_provider_failure_is_refunded(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    task_id = await _create(client, customer, t2i("boom [[fail:provider_error]]"))
    data = await wait_for_terminal(client, customer.headers, task_id)
    assert (data["state"], data["failCode"], data["failRetryable"]) == (
        "fail",
        "provider_error",
        True,
    )
    assert data["failMsg"] and data["resultJson"] is None and data["credits"] == 0
    assert await _balance(client, customer) == 1000
    assert await _ledger_kinds(runtime, task_id) == ["hold", "refund"]


async def test_content_policy_failure_is_charged(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    task_id = await _create(client, customer, t2i("nope [[fail:content_policy]]"))
    data = await wait_for_terminal(client, customer.headers, task_id)
    assert (data["failCode"], data["failRetryable"]) == ("content_policy", False)
    assert data["credits"] > 0 and await _balance(client, customer) == 1000 - data["credits"]
    assert await _ledger_kinds(runtime, task_id) == ["hold", "settle"]


async def test_cancel_a_queued_task(idle_app: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    task_id = await _create(client, customer, t2i())
    assert await _balance(client, customer) < 1000
    canceled = await client.post(
        "/api/v1/jobs/cancel", params={"taskId": task_id}, headers=customer.headers
    )
    assert canceled.status_code == 200, canceled.text
    data = canceled.json()["data"]
    assert (data["state"], data["failCode"], data["credits"]) == ("fail", "canceled", 0)
    assert await _balance(client, customer) == 1000
    again = await client.post(
        "/api/v1/jobs/cancel", params={"taskId": task_id}, headers=customer.headers
    )
    assert again.status_code == 409 and again.json()["msg"] == "task is already fail"
    assert await _ledger_kinds(runtime, task_id) == ["hold", "refund"]


async def test_cancel_while_generating_drops_the_late_result(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    task_id = await _create(client, customer, t2i("slow [[delay:1500]]"))
    async with worker_running(runtime) as worker:

        async def generating() -> bool:
            return (await _task(runtime, task_id)).status == "generating"

        await eventually(generating, what="the worker to start the task")
        await client.post(
            "/api/v1/jobs/cancel", params={"taskId": task_id}, headers=customer.headers
        )

        async def idle() -> bool:
            return worker.busy == 0

        await eventually(idle, what="the worker to finish its attempt")
    task = await _task(runtime, task_id)
    assert (task.status, task.fail_code) == ("fail", "canceled")
    async with runtime.sessions() as s:
        assert (
            await s.execute(select(MediaFile).where(MediaFile.task_id == task_id))
        ).first() is None  # type: ignore[arg-type]
    assert await _ledger_kinds(runtime, task_id) == ["hold", "refund"]
    assert not list(Path(runtime.settings.resolved_media_root).rglob(f"*{task_id}*/*"))


async def test_overdue_tasks_expire_and_are_refunded(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    task_id = await _create(client, customer, t2i())
    async with runtime.sessions() as s:
        # The task's deadline passes (as if no worker had been running for its whole life).
        await s.execute(update(Task).where(Task.id == task_id).values(deadline_at=now_ms() - 1))  # type: ignore[arg-type]
        await s.commit()
    async with worker_running(runtime):
        data = await wait_for_terminal(client, customer.headers, task_id)
    assert (data["state"], data["failCode"], data["credits"]) == ("fail", "expired", 0)
    assert await _balance(client, customer) == 1000


async def test_a_killed_workers_task_is_taken_over(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
    settings: Settings,
    settings_env: dict[str, str],
    tmp_path: Path,
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    task_id = await _create(client, customer, t2i("crash test [[delay:60000]]"))

    doomed = start_server(
        {**settings_env, "GENGATE_LEASE_SECONDS": "1.5"}, tmp_path, args=["worker"], ready_path=None
    )
    try:

        async def taken() -> Task | None:
            task = await _task(runtime, task_id)
            return task if task.lease_owner else None

        first = await eventually(taken, what="the first worker to lease the task")
        os.kill(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait()
    finally:
        doomed.stop()

    # A second worker (without the injected delay) takes the task over once the lease lapses.
    rescuer = settings.model_copy(update={"local_fault_injection": False, "lease_seconds": 1.5})
    async with running_app(rescuer) as (_app2, _client2):
        data = await wait_for_terminal(client, customer.headers, task_id)
    assert data["state"] == "success"
    task = await _task(runtime, task_id)
    assert task.attempts == 2 and task.lease_owner is None and first.lease_owner
    assert await _ledger_kinds(runtime, task_id) == ["hold", "settle"]


async def test_image_to_image_and_upscale_fetch_their_inputs(settings: Settings) -> None:
    source = render_text_to_image("source", width=320, height=240, output_format="png")
    with serve_files({"/in.png": (source, "image/png")}) as base:
        allowed = settings.model_copy(update={"allow_private_urls": True})
        async with running_app(allowed) as (app, client):
            customer = await make_customer(runtime_of(app))
            i2i = await _create(
                client,
                customer,
                {
                    "model": "gpt-image-2-image-to-image",
                    "prompt": "polish it",
                    "image_urls": [f"{base}/in.png"],
                    "aspect_ratio": "1:1",
                },
            )
            up = await _create(
                client,
                customer,
                {"model": "image-upscale", "input_urls": [f"{base}/in.png"], "scale": 2},
            )
            missing = await _create(
                client,
                customer,
                {
                    "model": "gpt-image-2-image-to-image",
                    "prompt": "x",
                    "input_urls": [f"{base}/nope.png"],
                },
            )
            sizes = {}
            for task_id in (i2i, up):
                data = await wait_for_terminal(client, customer.headers, task_id)
                assert data["state"] == "success", data
                url = json.loads(data["resultJson"])["resultUrls"][0]
                sizes[task_id] = Image.open(io.BytesIO((await client.get(url)).content)).size
            failed = await wait_for_terminal(client, customer.headers, missing)
    assert sizes[up] == (640, 480)
    assert sizes[i2i][0] == sizes[i2i][1]
    assert (failed["failCode"], failed["credits"]) == ("input_unreachable", 0)


async def test_loopback_inputs_are_refused_by_default(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    response = await client.post(
        "/api/v1/jobs/createTask",
        json={"model": "image-upscale", "input_urls": ["http://127.0.0.1:9/x.png"]},
        headers=customer.headers,
    )
    assert response.status_code == 400
    assert response.json()["data"]["field"] == "input_urls" and "loopback" in response.json()["msg"]


async def test_text_to_video_is_a_real_mp4(client: httpx.AsyncClient, customer: Customer) -> None:
    task_id = await _create(
        client,
        customer,
        {
            "model": "seedance-2.0-text-to-video",
            "prompt": "neon street",
            "aspect_ratio": "16:9",
            "resolution": "480p",
            "duration": 5,
        },
    )
    data = await wait_for_terminal(client, customer.headers, task_id)
    assert data["state"] == "success", data
    url = json.loads(data["resultJson"])["resultUrls"][0]
    video = await client.get(url)
    assert video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (854, 480)
        assert container.duration is not None and abs(container.duration / 1_000_000 - 5) < 0.1
