"""GET /metrics: the counters match what was done, and who may read them.

The metrics live in prometheus-client's process-wide registry, shared by every app a test
process builds: each test compares values before and after what it does, never totals.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

import app.api.metrics as api_metrics
from app.api.metrics import serving_worker_metrics
from app.core.config import UNLIMITED_ACTIVE_TASKS, Settings, TierLimits
from app.jobs.models import Task
from app.runtime import Runtime
from bench.servers import socket_owner
from tests.conftest import Customer, make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import (
    eventually,
    running_app,
    runtime_of,
    wait_for_terminal,
    worker_running,
)
from tests.support.backends import ON_POSTGRES, TEST_REDIS_URL
from tests.support.receiver import Answer, Received, receiving
from tests.support.server import LiveServer, free_port, start_server, wait_until

MODEL = "gpt-image-2-text-to-image"
UNLIMITED = {
    "standard": TierLimits(
        create_per_minute=1000, query_per_minute=1000, max_active_tasks=UNLIMITED_ACTIVE_TASKS
    )
}
STARTED = re.compile(r"Started server process \[(\d+)\]")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(response.text)


async def create(client: httpx.AsyncClient, customer: Customer, body: dict[str, Any]) -> str:
    response = await client.post("/api/v1/jobs/createTask", json=body, headers=customer.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["taskId"])


async def task_row(runtime: Runtime, task_id: str) -> Task:
    async with runtime.sessions() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        return task


async def mcp_call(
    client: httpx.AsyncClient, customer: Customer, tool: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    headers = {**customer.headers, "Content-Type": "application/json"}
    response = await client.post("/api/mcp", content=json.dumps(body), headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


async def test_created_tasks_are_counted_by_model_held_and_queued(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    before = await scrape(client)
    ids = [await create(client, customer, t2i(f"a red bicycle {n}")) for n in range(3)]
    after = await scrape(client)

    created = "gengate_tasks_created_total"
    assert value(after, created, model=MODEL) - value(before, created, model=MODEL) == 3
    prices = [(await task_row(runtime, task_id)).price for task_id in ids]
    held = value(after, "gengate_credits_held_total") - value(before, "gengate_credits_held_total")
    assert held == sum(prices) > 0
    # The database is this test's own: its three tasks are the whole queue.
    depth = {
        stage: value(after, "gengate_queue_depth", stage=stage)
        for stage in ("queued", "generating", "held_upstream")
    }
    assert depth == {"queued": 3, "generating": 0, "held_upstream": 0}


async def test_a_replayed_create_is_not_counted_again(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    headers = {**customer.headers, "X-Request-Id": "metrics-replay-1"}
    before = await scrape(client)
    for _ in range(2):
        response = await client.post("/api/v1/jobs/createTask", json=t2i(), headers=headers)
        assert response.status_code == 200, response.text
    after = await scrape(client)
    created = "gengate_tasks_created_total"
    assert value(after, created, model=MODEL) - value(before, created, model=MODEL) == 1


async def test_a_failed_task_is_counted_with_its_state_and_fail_code(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    before = await scrape(client)
    task_id = await create(client, customer, t2i("boom [[fail:provider_error]]"))
    data = await wait_for_terminal(client, customer.headers, task_id)
    assert (data["state"], data["failCode"]) == ("fail", "provider_error")
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    finished = "gengate_tasks_finished_total"
    assert delta(finished, model=MODEL, state="fail", fail_code="provider_error") == 1
    assert delta(finished, model=MODEL, state="success", fail_code="") == 0
    task = await task_row(runtime, task_id)
    assert delta("gengate_credits_refunded_total") == task.price > 0
    assert delta("gengate_credits_settled_total") == 0
    channel = str(task.channel)
    calls = "gengate_provider_calls_total"
    assert delta(calls, channel=channel, kind="submit", outcome="provider_error") == 1
    duration = "gengate_provider_call_duration_seconds_count"
    assert delta(duration, channel=channel, kind="submit") == 1


async def test_a_worker_run_to_success_observes_pickup_busy_slots_and_the_settle(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    task_id = await create(client, customer, t2i("slow [[delay:1500]]"))
    before = await scrape(client)
    busy = "gengate_worker_slots_busy"
    assert value(before, busy, pool="submit") == 0

    async with worker_running(runtime):

        async def rendering() -> Samples | None:
            samples = await scrape(client)
            return samples if value(samples, busy, pool="submit") == 1 else None

        during = await eventually(rendering, what="a busy submit slot")
        assert value(during, "gengate_queue_depth", stage="generating") == 1
        data = await wait_for_terminal(client, customer.headers, task_id)
    assert data["state"] == "success"
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after, busy, pool="submit") == 0
    assert delta("gengate_task_pickup_seconds_count") == 1
    task = await task_row(runtime, task_id)
    assert task.started_at is not None
    picked_s = (task.started_at - task.created_at) / 1000
    assert delta("gengate_task_pickup_seconds_sum") == pytest.approx(picked_s, abs=1e-6)
    assert delta("gengate_tasks_finished_total", model=MODEL, state="success", fail_code="") == 1
    assert delta("gengate_credits_settled_total") == task.price > 0
    channel = str(task.channel)
    calls = "gengate_provider_calls_total"
    assert delta(calls, channel=channel, kind="submit", outcome="succeeded") == 1
    duration = "gengate_provider_call_duration_seconds_sum"
    assert delta(duration, channel=channel, kind="submit") >= 1.5  # the injected delay
    assert value(after, "gengate_queue_depth", stage="queued") == 0


async def test_requests_are_counted_by_route_template_and_status(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    before = await scrape(client)
    missing_key = await client.delete("/api/v1/keys/key_nosuchkey123", headers=customer.headers)
    assert missing_key.status_code == 404
    missing_task = await client.get(
        "/api/v1/jobs/recordInfo", params={"taskId": "task_nosuch"}, headers=customer.headers
    )
    assert missing_task.status_code == 404
    assert (await client.get("/no/such/path/4711")).status_code == 404
    assert (await client.get("/healthz")).status_code == 200
    response = await client.get("/metrics")
    after = parse(response.text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "gengate_http_requests_total"
    key_route = {"route": "/api/v1/keys/{key_id}", "method": "DELETE"}
    assert delta(requests, **key_route, status="404") == 1
    record_info = {"route": "/api/v1/jobs/recordInfo", "method": "GET"}
    assert delta(requests, **record_info, status="404") == 1
    assert delta(requests, route="unmatched", method="GET", status="404") == 1
    assert delta(requests, route="/healthz", method="GET", status="200") == 1
    assert delta("gengate_http_request_duration_seconds_count", **key_route) == 1
    # The raw paths are no label values: only templates are.
    assert "key_nosuchkey123" not in response.text and "4711" not in response.text


async def test_mcp_tool_calls_are_counted_by_tool_and_outcome(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    before = await scrape(client)
    listed = await mcp_call(client, customer, "list_models", {})
    assert listed["isError"] is False
    unknown = await mcp_call(client, customer, "get_generation_status", {"taskId": "task_none"})
    assert unknown["isError"] is True
    refused = await mcp_call(client, customer, "get_account", {"surprise": 1})
    assert refused["isError"] is True
    after = await scrape(client)

    def delta(tool: str, outcome: str) -> float:
        labels = {"tool": tool, "outcome": outcome}
        name = "gengate_mcp_tool_calls_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("list_models", "ok") == 1
    assert delta("get_generation_status", "tool_error") == 1
    assert delta("get_account", "tool_error") == 1
    assert delta("list_models", "tool_error") == delta("get_account", "ok") == 0


async def test_a_scrape_answers_without_the_queue_depth_when_the_database_fails(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = select(func.count()).select_from(Task).where(func.no_such_function())
    monkeypatch.setattr(api_metrics, "_DEPTH", broken)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert "gengate_queue_depth" not in response.text
    assert "gengate_http_requests_total" in response.text


async def test_metrics_are_only_for_loopback_without_a_token(app: FastAPI) -> None:
    async def status(client_host: str, **headers: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(client_host, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return (await c.get("/metrics", headers=headers)).status_code

    assert await status("127.0.0.1") == 200
    assert await status("::1") == 200
    assert await status("10.1.2.3") == 403
    assert await status("203.0.113.9") == 403
    # Through a proxy on this machine the peer is loopback, but the client is not.
    assert await status("127.0.0.1", **{"X-Forwarded-For": "203.0.113.9"}) == 403
    assert await status("127.0.0.1", Forwarded="for=203.0.113.9") == 403


async def test_a_metrics_token_is_asked_of_every_client(settings: Settings) -> None:
    token_settings = settings.model_copy(update={"metrics_token": "scrape-me-3141"})
    async with running_app(token_settings) as (app, _client):

        async def status(client_host: str, authorization: str | None) -> int:
            transport = httpx.ASGITransport(app=app, client=(client_host, 40000))
            headers = {"Authorization": authorization} if authorization else {}
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                response = await c.get("/metrics", headers=headers)
            if response.status_code == 401:
                assert response.headers["WWW-Authenticate"] == "Bearer"
            return response.status_code

        assert await status("127.0.0.1", None) == 401
        assert await status("127.0.0.1", "Bearer wrong") == 401
        assert await status("127.0.0.1", "scrape-me-3141") == 401
        assert await status("203.0.113.9", "Bearer scrape-me-3141") == 200
        assert await status("127.0.0.1", "bearer scrape-me-3141") == 200


async def test_the_worker_metrics_port_serves_the_same_figures(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    await create(client, customer, t2i())
    port = free_port()
    with_port = dataclasses.replace(
        runtime, settings=runtime.settings.model_copy(update={"worker_metrics_port": port})
    )
    async with serving_worker_metrics(with_port), httpx.AsyncClient() as http:

        async def scraped() -> httpx.Response | None:
            try:
                return await http.get(f"http://127.0.0.1:{port}/metrics")
            except httpx.ConnectError:
                return None

        response = await eventually(scraped, within_s=10, what="the worker's metrics port")
        assert response.status_code == 200
        samples = parse(response.text)
        assert value(samples, "gengate_queue_depth", stage="queued") == 1
        assert (await http.get(f"http://127.0.0.1:{port}/other")).status_code == 404
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/metrics")


def test_gengate_worker_serves_metrics_and_stops_on_sigterm(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {**settings_env, "GENGATE_WORKER_METRICS_PORT": str(port)}
    worker = start_server(env, tmp_path, args=["worker"], ready_path=None)
    try:

        def answers() -> bool:
            if worker.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{worker.log()}")
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
            except httpx.HTTPError:
                return False
            return response.status_code == 200 and "gengate_queue_depth{" in response.text

        wait_until(answers, timeout=30, what="the worker's metrics port")
    finally:
        worker.stop()
    assert worker.process.returncode == 0, worker.log()
    assert "Traceback" not in worker.log()


def test_a_taken_worker_metrics_port_stops_the_worker_at_start(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENGATE_")}
        env |= settings_env | {"GENGATE_WORKER_METRICS_PORT": str(port)}
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "--json", "worker"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["error"].startswith(f"GENGATE_WORKER_METRICS_PORT {port}: Address already in use")
    assert "Traceback" not in done.stderr


# --- several processes behind one /metrics ----------------------------------------------


def _get_healthz(port: int, pids: list[int]) -> int | None:
    """GET /healthz on a new connection; the pid of the process that answered, if found."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = conn.recv(65536)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        # While the connection is open, the process that answered holds its end.
        return socket_owner(port, conn.getsockname()[1], pids)


def _healthz_count(base_url: str) -> float:
    response = httpx.get(base_url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    healthz = {"route": "/healthz", "method": "GET", "status": "200"}
    return value(parse(response.text), "gengate_http_requests_total", **healthz)


@contextmanager
def _uvicorn_processes(env: dict[str, str], workdir: Path, count: int) -> Iterator[list[str]]:
    """`count` API processes, each on its own port, as uvicorn runs gengate's app; their
    base URLs. Stopped (and waited for) on the way out."""
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GENGATE_")} | env
    try:
        for _ in range(count):
            port = free_port()
            log = (workdir / f"uvicorn-{port}.log").open("wb")
            command = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app"]
            processes.append(
                subprocess.Popen(
                    [*command, "--host", "127.0.0.1", "--port", str(port)],
                    env=full_env,
                    cwd=workdir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            wait_until(lambda u=url, p=process: _healthy(u, p), timeout=30, what=f"{url} up")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _healthy(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"{url} exited early")
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_one_metrics_endpoint_counts_every_api_process(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    """PostgreSQL + Redis: `gengate serve --workers 2`, whose two processes share one port;
    requests go to both and either one's /metrics counts them all. SQLite, where `serve
    --workers 2` is refused, runs two uvicorn processes that share a PROMETHEUS_MULTIPROC_DIR
    the way serve's would."""
    env = {**settings_env, "GENGATE_WORKERS_IN_PROCESS": "false"}
    if ON_POSTGRES and TEST_REDIS_URL:
        _serve_two_processes(env, tmp_path)
        return
    shared = tmp_path / "prometheus"
    shared.mkdir()
    with _uvicorn_processes(env | {"PROMETHEUS_MULTIPROC_DIR": str(shared)}, tmp_path, 2) as urls:
        first, second = urls
        before = _healthz_count(first)
        for url, times in ((first, 3), (second, 2)):
            for _ in range(times):
                assert httpx.get(url + "/healthz", timeout=10).status_code == 200
        assert _healthz_count(first) - before == 5
        assert _healthz_count(second) - before == 5


def _serve_two_processes(env: dict[str, str], tmp_path: Path) -> None:
    server: LiveServer = start_server(env, tmp_path, args=["serve", "--workers", "2"])
    try:
        port = int(server.base_url.rsplit(":", 1)[1])
        wait_until(lambda: len(set(STARTED.findall(server.log()))) == 2, what="two processes")
        pids = sorted({int(p) for p in STARTED.findall(server.log())})
        before = _healthz_count(server.base_url)
        answered: dict[int, int] = {}
        made = 0
        for _ in range(200):  # the kernel spreads connections; both get some well before
            owner = _get_healthz(port, pids)
            made += 1
            if owner is not None:
                answered[owner] = answered.get(owner, 0) + 1
            if len(answered) == 2 and made >= 6:
                break
        assert set(answered) == set(pids), f"only {answered} of {pids} answered {made} calls"
        assert _healthz_count(server.base_url) - before == made
    finally:
        server.stop()
    assert server.process.returncode == 0, server.log()
    assert "Traceback" not in server.log()


async def test_tasks_created_by_a_group_are_counted_each(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """/v1/imagine creates several tasks in one transaction: each is counted once."""
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    before = await scrape(client)
    body = {"prompt": "a lighthouse", "n": 3, "model": "gpt-image-1"}
    response = await client.post("/v1/imagine", json=body, headers=customer.headers)
    assert response.status_code == 200, response.text
    after = await scrape(client)
    models = {(await task_row(runtime, task_id)).model for task_id in response.json()["ids"]}
    assert len(models) == 1
    created = "gengate_tasks_created_total"
    model = models.pop()
    assert value(after, created, model=model) - value(before, created, model=model) == 3


async def test_creates_of_a_key_without_an_active_limit_are_counted(settings: Settings) -> None:
    """On PostgreSQL such a create is one statement that commits on its own (the path
    `make bench` measures); on SQLite the usual transaction."""
    unlimited = settings.model_copy(update={"tiers": UNLIMITED, "workers_in_process": False})
    async with running_app(unlimited) as (app, client):
        customer = await make_customer(runtime_of(app))
        before = await scrape(client)
        for n in range(2):
            await create(client, customer, t2i(f"a kite {n}"))
        after = await scrape(client)
    created = "gengate_tasks_created_total"
    assert value(after, created, model=MODEL) - value(before, created, model=MODEL) == 2


async def test_the_grafana_dashboard_reads_only_metrics_gengate_exports(
    client: httpx.AsyncClient,
) -> None:
    dashboard = json.loads((Path(__file__).parents[2] / "deploy/grafana/gengate.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\bgengate_\w+", expr)}
    response = await client.get("/metrics")
    exported = {family.name for family in text_string_to_metric_families(response.text)}
    suffixes = re.compile(r"_(total|bucket|count|sum)$")
    unknown = {name for name in used if suffixes.sub("", name) not in exported}
    assert len(used) >= 12 and not unknown, unknown


async def test_callback_attempts_are_counted_by_what_the_delivery_became(
    settings: Settings,
) -> None:
    def refuse_first(_request: Received, before: int) -> Answer:
        return Answer(status=503 if before == 0 else 200)

    callback_settings = settings.model_copy(
        update={
            "outbound_allowlist": ["127.0.0.1/32"],
            "callback_retry_schedule": [0.2, 0.2],
            "callback_timeout_seconds": 2,
        }
    )
    with receiving(refuse_first) as receiver:
        async with running_app(callback_settings) as (app, client):
            customer = await make_customer(runtime_of(app))
            before = await scrape(client)
            body = {**t2i(), "callBackUrl": receiver.url + "/hook"}
            task_id = await create(client, customer, body)
            await wait_for_terminal(client, customer.headers, task_id)

            async def delivered() -> Samples | None:
                samples = await scrape(client)
                name = "gengate_callback_attempts_total"
                done = value(samples, name, outcome="delivered") - value(
                    before, name, outcome="delivered"
                )
                return samples if done == 1 else None

            after = await eventually(delivered, what="the callback to be delivered")
    name = "gengate_callback_attempts_total"
    assert value(after, name, outcome="pending") - value(before, name, outcome="pending") == 1
    assert value(after, name, outcome="failed") - value(before, name, outcome="failed") == 0
    assert len(receiver.on("/hook")) == 2
