"""A task's log lines, in a worker process and in its callback's delivery, carry the
correlation id of the request that created it, and its task id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.correlation import new_correlation_id
from tests.conftest import Customer, make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import eventually, runtime_of, wait_for_terminal
from tests.support.logs import LogLines, captured_logs
from tests.support.receiver import receiving
from tests.support.server import start_server


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    """Callbacks may reach the test's receiver on loopback."""
    return {**settings_env, "GENGATE_OUTBOUND_ALLOWLIST": json.dumps(["127.0.0.1/32"])}


def _traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-00f067aa0ba902b7-01"


async def _create(client: httpx.AsyncClient, customer: Customer, trace_id: str, **body: Any) -> str:
    response = await client.post(
        "/api/v1/jobs/createTask",
        json={**t2i(), **body},
        headers={**customer.headers, "traceparent": _traceparent(trace_id)},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-correlation-id"] == trace_id
    return str(response.json()["data"]["taskId"])


async def _line(logs: LogLines, logger: str, task_id: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        lines = [r for r in logs.records() if r["logger"] == logger and r.get("task_id") == task_id]
        return lines[0] if lines else None

    return await eventually(found, what=f"a {logger} line for {task_id}")


async def test_a_worker_process_logs_the_task_with_its_request_id(
    idle_app: tuple[FastAPI, httpx.AsyncClient], settings_env: dict[str, str], tmp_path: Path
) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    trace_id = new_correlation_id()
    task_id = await _create(client, customer, trace_id)
    env = {**settings_env, "GENGATE_LOG_FORMAT": "json"}
    worker = start_server(env, tmp_path, args=["worker"], ready_path=None)
    try:
        assert (await wait_for_terminal(client, customer.headers, task_id))["state"] == "success"
        line = await _line(LogLines(worker.log), "gengate.worker", task_id)
    finally:
        worker.stop()
    assert line["correlation_id"] == trace_id
    assert line["message"] == f"task {task_id}: succeeded on channel local"


async def test_a_callback_delivery_logs_with_its_task_request_id(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    first, second = new_correlation_id(), new_correlation_id()
    with receiving() as receiver, captured_logs() as logs:
        # Two deliveries, each with its own task's ids.
        one = await _create(client, customer, first, callBackUrl=receiver.url + "/one")
        two = await _create(client, customer, second, callBackUrl=receiver.url + "/two")
        lines = [await _line(logs, "gengate.callbacks", task_id) for task_id in (one, two)]
    assert [line["correlation_id"] for line in lines] == [first, second]
    assert all("attempt 1: 200 -> delivered" in line["message"] for line in lines)
