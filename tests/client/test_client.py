"""The Python client (sync and async) against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from app.client import (
    AsyncClient,
    AuthenticationError,
    BadRequest,
    Client,
    ConfigurationError,
    ConnectionFailed,
    NotFound,
    RateLimited,
    Task,
    TaskNotSucceeded,
    WaitTimeout,
)
from tests.api.test_metrics import parse, value
from tests.client.conftest import (
    IMAGE_MODEL,
    PNG_MAGIC,
    VIDEO_MODEL,
    is_mp4,
    server_asset,
    sha256_of,
)
from tests.conftest import Customer
from tests.support.apps import eventually
from tests.support.console import ConsoleServer
from tests.support.faultproxy import FaultProxy

T = TypeVar("T")


def _client(live: ConsoleServer, customer: Customer) -> Client:
    return Client(live.base_url, customer.key)


def test_create_wait_download(live: ConsoleServer, customer: Customer, tmp_path: Path) -> None:
    seen: list[Task] = []
    with _client(live, customer) as client:
        created = client.create(IMAGE_MODEL, {"prompt": "A red bicycle", "aspect_ratio": "16:9"})
        assert created.task_id.startswith("task_") and created.state == "waiting"
        assert client.get(created.task_id).task_id == created.task_id

        task = client.wait(created.task_id, timeout=30, on_update=seen.append)
        assert task.state == "success" and task.progress == 100 and task.credits == 4
        assert len(task.result_urls) == 1
        # Every change was seen once, in order, ending with the result.
        assert seen[-1] == task and all(t.state == "waiting" for t in seen[:-1])
        assert [t.progress for t in seen] == sorted(t.progress for t in seen)

        paths = client.download(task, tmp_path / "out")
    [asset] = server_asset(live, customer, created.task_id)
    assert paths == [tmp_path / "out" / f"{created.task_id}-1.png"]
    assert paths[0].read_bytes().startswith(PNG_MAGIC)
    assert sha256_of(paths[0]) == asset["sha256"]
    assert not list((tmp_path / "out").glob("*.part"))


def test_wait_polls_with_etags(live: ConsoleServer, customer: Customer) -> None:
    """An unchanged task costs a 304: the server counts them in its metrics."""

    def not_modified() -> float:
        answer = httpx.get(live.base_url + "/metrics")
        assert answer.status_code == 200, answer.text
        labels = {"route": "/api/v1/jobs/recordInfo", "method": "GET", "status": "304"}
        return value(parse(answer.text), "gengate_http_requests_total", **labels)

    before = not_modified()
    with _client(live, customer) as client:
        created = client.create(IMAGE_MODEL, {"prompt": "[[delay:1500]] slow"})
        assert client.wait(created.task_id, timeout=30).succeeded
    assert not_modified() > before


def test_wait_timeout_keeps_the_task(live: ConsoleServer, customer: Customer) -> None:
    with _client(live, customer) as client:
        created = client.create(IMAGE_MODEL, {"prompt": "[[delay:1500]] slow"})
        with pytest.raises(WaitTimeout) as caught:
            client.wait(created.task_id, timeout=0.3)
        assert caught.value.task.task_id == created.task_id
        assert caught.value.task.state == "waiting"
        with pytest.raises(TaskNotSucceeded):
            client.download(caught.value.task, "unused")
        assert client.wait(created.task_id, timeout=30).succeeded


def test_failed_task(live: ConsoleServer, customer: Customer, tmp_path: Path) -> None:
    with _client(live, customer) as client:
        created = client.create(IMAGE_MODEL, {"prompt": "[[fail:provider_error]] no"})
        task = client.wait(created.task_id, timeout=30)
        assert task.state == "fail" and task.fail_code == "provider_error"
        with pytest.raises(TaskNotSucceeded, match="fail"):
            client.download(task, tmp_path)
        with pytest.raises(TaskNotSucceeded, match="failed"):
            client.download(task.task_id, tmp_path)  # asks the server


def test_imagine_reimagine_tasks(live: ConsoleServer, customer: Customer, tmp_path: Path) -> None:
    with _client(live, customer) as client:
        ids = client.imagine("A lighthouse at dusk", n=2, model=IMAGE_MODEL, aspect_ratio="3:2")
        assert len(ids) == 2
        done = [client.wait(task_id, timeout=30) for task_id in ids]
        assert all(t.succeeded for t in done)

        [upscaled] = client.reimagine(ids[0], 1, "upscale")
        upscale = client.wait(upscaled, timeout=30)
        assert upscale.succeeded and upscale.parent_task_id == ids[0]
        assert (upscale.action, upscale.index) == ("upscale", 1)
        [path] = client.download(upscaled, tmp_path)
        assert path.read_bytes().startswith(PNG_MAGIC)

        page = client.tasks(page_size=2)
        assert page.total == 3 and page.page_size == 2 and len(page.tasks) == 2
        assert page.tasks[0].id == upscaled and page.tasks[0].parent_task_id == ids[0]
        second = client.tasks(page=2, page_size=2)
        assert [t.id for t in second.tasks] in ([ids[0]], [ids[1]])  # created in one instant
        by_model = client.tasks(model=IMAGE_MODEL, status=2)
        assert sorted(t.id for t in by_model.tasks) == sorted(ids)
        assert client.tasks(status=3).total == 0
        assert client.task(ids[1]).request["prompt"] == "A lighthouse at dusk"


def test_request_id_makes_a_create_idempotent(live: ConsoleServer, customer: Customer) -> None:
    with _client(live, customer) as client:
        first = client.create(IMAGE_MODEL, {"prompt": "once"}, request_id="client-once")
        again = client.create(IMAGE_MODEL, {"prompt": "once"}, request_id="client-once")
        assert again.task_id == first.task_id
        assert client.tasks().total == 1


def test_errors_carry_status_message_and_field(live: ConsoleServer, customer: Customer) -> None:
    with _client(live, customer) as client:
        with pytest.raises(BadRequest) as bad_model:
            client.create("no-such-model", {"prompt": "x"})
        assert bad_model.value.status == 400 and bad_model.value.field == "model"
        assert bad_model.value.message == "model is not supported"
        assert IMAGE_MODEL in bad_model.value.data["allowed"]

        with pytest.raises(BadRequest) as bad_param:
            client.create(IMAGE_MODEL, {"prompt": "x", "aspect_ratio": "7:3"})
        assert bad_param.value.field == "aspect_ratio"
        assert "aspect_ratio must be one of" in bad_param.value.message

        with pytest.raises(BadRequest) as bad_n:  # the /v1 shape: {"message"} only
            client.imagine("x", n=9)
        assert bad_n.value.message.startswith("n must be") and bad_n.value.field is None

        with pytest.raises(NotFound, match="task not found"):
            client.get("task_nope")
    with pytest.raises(AuthenticationError) as wrong_key:
        Client(live.base_url, "sk_" + "x" * 43).get("task_nope")
    assert wrong_key.value.status == 401 and wrong_key.value.message == "authentication failed"
    assert "sk_" not in str(wrong_key.value)


def test_rate_limit_carries_retry_after(live: ConsoleServer) -> None:
    customer = live.customer(tier="one-create")
    with _client(live, customer) as client:
        client.create(IMAGE_MODEL, {"prompt": "first"})
        with pytest.raises(RateLimited) as limited:
            client.create(IMAGE_MODEL, {"prompt": "second"})  # no request id: never resent
    assert limited.value.status == 429 and limited.value.message == "rate limit exceeded"
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 60
    assert limited.value.data["tier"] == "one-create"


def test_configuration_from_the_environment(
    live: ConsoleServer, customer: Customer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GENGATE_API_KEY", raising=False)
    monkeypatch.delenv("GENGATE_URL", raising=False)
    with pytest.raises(ConfigurationError) as missing:
        Client()
    assert missing.value.field == "api_key" and "GENGATE_API_KEY" in missing.value.message
    with pytest.raises(ConfigurationError) as bad_url:
        Client("ftp://example.com", "sk_x")
    assert bad_url.value.field == "url"

    monkeypatch.setenv("GENGATE_URL", live.base_url + "/")
    monkeypatch.setenv("GENGATE_API_KEY", customer.key)
    with Client() as client:
        assert client.base_url == live.base_url
        assert client.tasks().total == 0
        assert customer.key not in repr(client) + repr(client.settings)


async def test_async_client(live: ConsoleServer, customer: Customer, tmp_path: Path) -> None:
    updates: list[Task] = []

    async def on_update(task: Task) -> None:
        updates.append(task)

    async with AsyncClient(live.base_url, customer.key) as client:
        created = await client.create(
            VIDEO_MODEL,
            {"prompt": "A paper boat", "duration": 5, "resolution": "480p"},
            request_id="async-video",
        )
        assert (await client.get(created.task_id)).model == VIDEO_MODEL
        task = await client.wait(created.task_id, timeout=60, on_update=on_update)
        assert task.succeeded and updates[-1] == task
        [video] = await client.download(task, tmp_path)
        assert video.suffix == ".mp4" and is_mp4(video.read_bytes())
        [asset] = server_asset(live, customer, created.task_id)
        assert sha256_of(video) == asset["sha256"] and asset["contentType"] == "video/mp4"

        ids = await client.imagine("Two cats", n=2, model=IMAGE_MODEL)
        finished = await asyncio.gather(*(client.wait(i, timeout=30) for i in ids))
        assert all(t.succeeded for t in finished)
        [variation] = await client.reimagine(ids[1], 1, "variation", prompt="in snow")
        varied = await client.wait(variation, timeout=30)
        assert varied.succeeded and (varied.parent_task_id, varied.action) == (ids[1], "variation")
        page = await client.tasks(model=IMAGE_MODEL)
        assert {t.id for t in page.tasks} == set(ids)  # the variation ran image-to-image
        assert (await client.task(variation)).model == "gpt-image-2-image-to-image"
        with pytest.raises(BadRequest) as bad:
            await client.create(IMAGE_MODEL, {"prompt": ""})
        assert bad.value.field == "prompt"


def test_gengate_client_needs_nothing_else_of_gengate(tmp_path: Path) -> None:
    """`gengate.client` imports no server code (database, web framework, services)."""
    probe = (
        "import sys, json\n"
        "from gengate.client import Client, AsyncClient\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('app', 'sqlalchemy', 'fastapi', 'starlette', 'sqlmodel', 'mcp', 'redis'))))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENGATE_")}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert loaded and all(m == "app" or m.startswith("app.client") for m in loaded), loaded


async def test_retries_only_what_is_safe_to_send_twice(
    live: ConsoleServer, customer: Customer
) -> None:
    """A connection broken after the request went out: a read is sent again, and so is a
    create with a request id (the server answers the same task); a create without one is
    not, since the server may have made the task."""
    port = int(live.base_url.rsplit(":", 1)[1])
    proxy = FaultProxy("127.0.0.1", port)
    await proxy.start()
    through = f"http://127.0.0.1:{proxy.port}"

    async def broken_once(call: Awaitable[T]) -> T:
        """Run `call` while the proxy holds its first connection, then break that one."""
        await proxy.stall()
        running = asyncio.ensure_future(call)
        await eventually(_held(proxy), what="the request to reach the proxy")
        await proxy.restore()  # resets the held connection; later ones pass
        return await running

    try:
        async with AsyncClient(through, customer.key) as client:
            created = await broken_once(
                client.create(IMAGE_MODEL, {"prompt": "retried"}, request_id="retry-1")
            )
            assert (await broken_once(client.get(created.task_id))).task_id == created.task_id
            with pytest.raises(ConnectionFailed):
                await broken_once(client.create(IMAGE_MODEL, {"prompt": "not retried"}))
            page = await client.tasks()
        assert [t.id for t in page.tasks] == [created.task_id]
    finally:
        await proxy.close()


def _held(proxy: FaultProxy) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return proxy.open_connections > 0

    return probe
