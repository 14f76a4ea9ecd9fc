"""GENGATE_LOG_FORMAT=json: one object per line, the request's correlation id in its lines,
its answer header, its task and the worker's lines; secrets redacted in every format."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.core import correlation
from app.core.config import UNLIMITED_ACTIVE_TASKS, Settings, TierLimits
from app.core.correlation import new_correlation_id, trace_id_of
from app.core.logging import LogFormat, hide_in_logs
from app.jobs.models import Task
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import eventually, running_app, runtime_of, wait_for_terminal
from tests.support.logs import LogLines, captured_logs
from tests.support.server import start_server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
GENERATED = re.compile(r"[0-9a-f]{32}")
log = logging.getLogger("gengate.test")


def test_a_line_is_one_object_with_the_fields() -> None:
    with captured_logs() as logs:
        log.warning("plain %s", "line")
        try:
            raise ValueError("first\nsecond")
        except ValueError:
            log.exception("failed")
    lines = logs.text().splitlines()
    assert len(lines) == 2  # the traceback did not break its line
    plain, failed = logs.records()
    assert {k: plain[k] for k in ("level", "logger", "message")} == {
        "level": "WARNING",
        "logger": "gengate.test",
        "message": "plain line",
    }
    stamp = datetime.fromisoformat(plain["time"])
    assert stamp.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert "correlation_id" not in plain and "task_id" not in plain  # nothing known
    assert failed["level"] == "ERROR"
    assert "Traceback" in failed["exc_info"] and "ValueError: first\nsecond" in failed["exc_info"]


async def test_the_bound_work_names_every_line() -> None:
    with captured_logs() as logs:
        correlation.bind(correlation_id="corr-1", task_id="task_1")
        log.info("working", extra={"attempt": 2})
    (line,) = logs.records()
    assert (line["correlation_id"], line["task_id"], line["attempt"]) == ("corr-1", "task_1", 2)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_secrets_are_redacted(log_format: LogFormat) -> None:
    key = "sk_" + "A1b2C3d4" * 5
    provider_key = "provider-key-" + new_correlation_id()
    signing_secret = 'signing"secret\\' + new_correlation_id()
    webhook_secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUA=="
    hide_in_logs(provider_key)
    hide_in_logs(signing_secret)
    with captured_logs(log_format) as logs:
        log.info("client sent %s in the URL /x?key=%s", key, key)
        log.info(
            "upstream refused",
            extra={
                "headers": {"Authorization": "Bearer upstream-token-123"},
                "sent": f"Authorization: Basic {provider_key}",
                "secret": signing_secret,
            },
        )
        log.info("request headers %s", [(b"authorization", b"Bearer " + key.encode())])
        try:
            raise RuntimeError(f"failed with {provider_key} and {webhook_secret}")
        except RuntimeError:
            log.exception("upstream call failed")
    text = logs.text()
    for secret in (key, provider_key, signing_secret, "upstream-token-123", webhook_secret):
        assert secret not in text
    assert json.dumps(signing_secret)[1:-1] not in text
    assert "[redacted]" in text
    if log_format == "json":
        first, refused, _headers, failed = logs.records()
        assert first["message"] == "client sent sk_[redacted] in the URL /x?key=sk_[redacted]"
        assert refused["headers"] == {"Authorization": "[redacted]"}
        assert refused["secret"] == "[redacted]"
        assert "RuntimeError: failed with [redacted] and whsec_[redacted]" in failed["exc_info"]


@pytest.mark.parametrize(
    "header",
    [
        f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",  # uppercase
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",  # forbidden version
        f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra",  # version 00 has four fields
        f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01",  # short trace id
        f"00-{TRACE_ID}-00f067aa0ba902b7",  # no flags
        f"00_{TRACE_ID}_00f067aa0ba902b7_01",
        "",
    ],
)
def test_an_invalid_traceparent_is_ignored(header: str) -> None:
    assert trace_id_of(header) is None


def test_a_valid_traceparent_gives_its_trace_id() -> None:
    assert trace_id_of(TRACEPARENT) == TRACE_ID
    # A later version may carry more fields.
    assert trace_id_of(f"01-{TRACE_ID}-00f067aa0ba902b7-01-more") == TRACE_ID


async def _create(client: httpx.AsyncClient, customer: Customer, **headers: str) -> httpx.Response:
    response = await client.post(
        "/api/v1/jobs/createTask", json=t2i(), headers={**customer.headers, **headers}
    )
    assert response.status_code == 200, response.text
    return response


async def _correlation_of(runtime: Runtime, task_id: str) -> str | None:
    async with runtime.sessions() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        return task.correlation_id


async def _worker_line(logs: LogLines, task_id: str) -> dict[str, object]:
    async def settled() -> dict[str, object] | None:
        lines = [r for r in logs.about(task_id) if r["logger"] == "gengate.worker"]
        return lines[0] if lines else None

    return await eventually(settled, what=f"the worker's line for {task_id}")


async def test_a_traceparent_names_the_request_its_task_and_the_worker(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    with captured_logs() as logs:
        response = await _create(client, customer, traceparent=TRACEPARENT)
        assert response.headers["x-correlation-id"] == TRACE_ID
        task_id = response.json()["data"]["taskId"]
        data = await wait_for_terminal(client, customer.headers, task_id)
        assert data["state"] == "success"
        line = await _worker_line(logs, task_id)
    assert await _correlation_of(runtime, task_id) == TRACE_ID
    assert line["correlation_id"] == TRACE_ID and line["task_id"] == task_id
    assert line["message"] == f"task {task_id}: succeeded on channel local"


async def test_without_a_valid_traceparent_an_id_is_generated(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    plain = await _create(client, customer)
    invalid = await _create(
        client, customer, traceparent=f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01"
    )
    ids = [r.headers["x-correlation-id"] for r in (plain, invalid)]
    assert all(GENERATED.fullmatch(i) for i in ids) and len(set(ids)) == 2
    assert TRACE_ID not in ids
    for response, expected in zip((plain, invalid), ids, strict=True):
        assert await _correlation_of(runtime, response.json()["data"]["taskId"]) == expected
    # Every answer has one, a refusal included.
    refused = await client.get("/api/v1/account")
    assert refused.status_code == 401 and GENERATED.fullmatch(refused.headers["x-correlation-id"])


UNLIMITED = {
    "standard": TierLimits(
        create_per_minute=1000, query_per_minute=1000, max_active_tasks=UNLIMITED_ACTIVE_TASKS
    )
}


@pytest.mark.parametrize("unlimited", [False, True], ids=["limited key", "unlimited key"])
async def test_every_create_path_stores_the_id(settings: Settings, unlimited: bool) -> None:
    """Plain creates (on PostgreSQL one statement for an unlimited key, the task as a CTE
    for a limited one), idempotent ones, and /v1/imagine's groups."""
    tiers = UNLIMITED if unlimited else settings.tiers
    idle = settings.model_copy(update={"tiers": tiers, "workers_in_process": False})
    async with running_app(idle) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        headers = {**customer.headers, "traceparent": TRACEPARENT}
        plain = (await _create(client, customer, traceparent=TRACEPARENT)).json()["data"]
        replayable = await _create(
            client, customer, traceparent=TRACEPARENT, **{"X-Request-Id": "r1"}
        )
        group = await client.post(
            "/v1/imagine", json={"n": 2, "prompt": "a red bicycle"}, headers=headers
        )
        assert group.status_code == 200, group.text
        task_ids = [plain["taskId"], replayable.json()["data"]["taskId"], *group.json()["ids"]]
        assert [await _correlation_of(runtime, i) for i in task_ids] == [TRACE_ID] * 4


async def test_an_mcp_request_names_its_task(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    body = t2i()
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "generate_image",
            "arguments": {**body["input"], "model": body["model"]},
        },
    }
    response = await client.post(
        "/api/mcp",
        json=call,
        headers={**customer.headers, "traceparent": TRACEPARENT},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-correlation-id"] == TRACE_ID
    task_id = response.json()["result"]["structuredContent"]["taskId"]
    assert await _correlation_of(runtime, task_id) == TRACE_ID


async def test_a_json_server_logs_uvicorn_and_the_worker_with_the_id(
    idle_app: tuple[FastAPI, httpx.AsyncClient], settings_env: dict[str, str], tmp_path: Path
) -> None:
    customer = await make_customer(runtime_of(idle_app[0]))
    server = start_server({**settings_env, "GENGATE_LOG_FORMAT": "json"}, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await _create(http, customer, traceparent=TRACEPARENT)
            task_id = response.json()["data"]["taskId"]
            await wait_for_terminal(http, customer.headers, task_id)

        line = await _worker_line(LogLines(server.log), task_id)
    finally:
        server.stop()
    records = LogLines(server.log).records()  # every line is one JSON object
    assert line["correlation_id"] == TRACE_ID and line["task_id"] == task_id
    (access,) = [
        r
        for r in records
        if r["logger"] == "uvicorn.access" and "/api/v1/jobs/createTask" in r["message"]
    ]
    assert access["correlation_id"] == TRACE_ID
    assert customer.key not in server.log()
