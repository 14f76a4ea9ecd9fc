"""What each API call does, as a plan of steps (see app.client.steps), written once for
the sync and the async client."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from app.client.errors import WaitTimeout
from app.client.models import Asset, Task, TaskCreated, TaskItem, TaskPage
from app.client.steps import Notify, Plan, Send, Settings, Sleep, request


def _data(response: httpx.Response) -> Any:
    """The `data` of an /api/v1 envelope."""
    return response.json()["data"]


def _request_id_headers(request_id: str | None) -> dict[str, str]:
    return {"X-Request-Id": request_id} if request_id else {}


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def create(
    settings: Settings,
    model: str,
    input: dict[str, Any],
    *,
    callback_url: str | None,
    request_id: str | None,
) -> Plan[TaskCreated]:
    body = _compact({"model": model, "input": input, "callBackUrl": callback_url})
    send = Send(
        "POST",
        "/api/v1/jobs/createTask",
        json=body,
        headers={**settings.auth_headers(), **_request_id_headers(request_id)},
    )
    # With a request id a second send answers the task the first one made.
    response = yield from request(settings, send, retry=request_id is not None)
    return TaskCreated.model_validate(_data(response))


def get(settings: Settings, task_id: str) -> Plan[Task]:
    task, _etag = yield from _record_info(settings, task_id, etag=None)
    assert task is not None
    return task


def _record_info(
    settings: Settings, task_id: str, *, etag: str | None
) -> Plan[tuple[Task | None, str | None]]:
    """recordInfo; (None, etag) when the task has not changed since `etag` (a 304)."""
    headers = settings.auth_headers()
    if etag:
        headers["If-None-Match"] = etag
    send = Send("GET", "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=headers)
    response = yield from request(settings, send, retry=True, ok=(200, 304))
    new_etag = response.headers.get("ETag") or etag
    if response.status_code == 304:
        return None, new_etag
    return Task.model_validate(_data(response)), new_etag


@dataclass(frozen=True)
class Polling:
    """How often `wait` asks: from `first`, times `factor` while nothing changes, up to
    `longest`; a change brings the interval back down."""

    first: float = 0.25
    factor: float = 1.5
    longest: float = 3.0

    def next(self, interval: float, *, changed: bool) -> float:
        if changed:
            return max(self.first, interval / 2)
        return min(self.longest, interval * self.factor)


def wait(
    settings: Settings,
    task_id: str,
    *,
    timeout: float | None,
    on_update: Callable[[Task], Any] | None,
    polling: Polling,
) -> Plan[Task]:
    """Poll recordInfo until the task is done. Each poll sends the last ETag, so an
    unchanged task costs a bodiless 304; `on_update` sees every change. Returns the task
    (succeeded or failed); raises WaitTimeout once `timeout` seconds have passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    task: Task | None = None
    etag: str | None = None
    interval = polling.first
    while True:
        fresh, etag = yield from _record_info(settings, task_id, etag=etag)
        if fresh is not None:
            task = fresh
            if on_update is not None:
                yield Notify(on_update, task)
        assert task is not None  # the first answer is never a 304: it sent no ETag
        if task.done:
            return task
        interval = polling.next(interval, changed=fresh is not None)
        pause = interval
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(
                    f"task {task_id} is still {task.stage or task.state} after {timeout:g} s",
                    task=task,
                )
            pause = min(pause, left)
        yield Sleep(pause)


def task_item(settings: Settings, task_id: str) -> Plan[TaskItem]:
    send = Send("GET", f"/v1/tasks/{_segment(task_id)}", headers=settings.auth_headers())
    response = yield from request(settings, send, retry=True)
    return TaskItem.model_validate(response.json())


def asset(settings: Settings, asset_id: str) -> Plan[Asset]:
    send = Send("GET", f"/v1/assets/{_segment(asset_id)}", headers=settings.auth_headers())
    response = yield from request(settings, send, retry=True)
    return Asset.model_validate(response.json())


def _segment(value: str) -> str:
    return quote(value, safe="")


def tasks(
    settings: Settings,
    *,
    model: str | None,
    status: int | None,
    start: str | None,
    end: str | None,
    page: int,
    page_size: int,
) -> Plan[TaskPage]:
    params = _compact(
        {
            "model": model,
            "status": status,
            "start": start,
            "end": end,
            "page": page,
            "pageSize": page_size,
        }
    )
    send = Send("GET", "/v1/tasks", params=params, headers=settings.auth_headers())
    response = yield from request(settings, send, retry=True)
    return TaskPage.model_validate(response.json())


def imagine(
    settings: Settings,
    *,
    prompt: str | None,
    n: int | None,
    model: str | None,
    style: str | None,
    reference: list[str] | None,
    callback_url: str | None,
    request_id: str | None,
    params: dict[str, Any],
) -> Plan[list[str]]:
    body = {
        "n": n,
        "model": model,
        "style": style,
        "prompt": prompt,
        "reference": reference,
        "callback_url": callback_url,
        **params,
    }
    return (yield from _create_ids(settings, "/v1/imagine", body, request_id=request_id))


def reimagine(
    settings: Settings,
    *,
    task_id: str,
    index: int,
    action: str,
    prompt: str | None,
    reference: list[str] | None,
    callback_url: str | None,
    request_id: str | None,
) -> Plan[list[str]]:
    body = {
        "task_id": task_id,
        "index": index,
        "action": action,
        "prompt": prompt,
        "reference": reference,
        "callback_url": callback_url,
    }
    return (yield from _create_ids(settings, "/v1/reimagine", body, request_id=request_id))


def _create_ids(
    settings: Settings, path: str, body: dict[str, Any], *, request_id: str | None
) -> Plan[list[str]]:
    """A /v1 create; the new tasks' ids."""
    send = Send(
        "POST",
        path,
        json=_compact(body),
        headers={**settings.auth_headers(), **_request_id_headers(request_id)},
    )
    response = yield from request(settings, send, retry=request_id is not None)
    return [str(task_id) for task_id in response.json()["ids"]]
