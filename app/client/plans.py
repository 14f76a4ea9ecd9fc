"""What each client call does, written once for both the sync and the async client.

A plan is a generator: it yields steps (send a request, sleep, tell the caller's callback,
fetch a file) and receives their outcomes; `Client` and `AsyncClient` only carry the steps
out, with httpx's sync or async API. Retries, backoff, the wait loop, error parsing and
download checks therefore live here, and behave the same in both.
"""

from __future__ import annotations

import email.utils
import hashlib
import mimetypes
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from app.client.errors import (
    ApiError,
    ConfigurationError,
    ConnectionFailed,
    DownloadError,
    TaskNotSucceeded,
    WaitTimeout,
    api_error_class,
)
from app.client.models import SUCCESS, Asset, Task, TaskCreated, TaskItem, TaskPage

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
# Statuses a request may be sent again after: the server refused it without doing it.
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_COMPLETED = 2  # /v1 task status of a task with results


@dataclass(frozen=True)
class Send:
    """One API request; the outcome is an httpx.Response, or the httpx.TransportError."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Notify:
    """Call the caller's `on_update(task)` (awaited when it returns an awaitable)."""

    callback: Callable[[Task], Any]
    task: Task


@dataclass(frozen=True)
class Fetch:
    """Stream `url` (a signed media URL: sent without the API key) into `sink`; the
    outcome is the sink's finished path, or the httpx.TransportError / ApiError."""

    url: str
    sink: FileSink


Step = Send | Sleep | Notify | Fetch
Plan = Generator[Step, Any, T]


@dataclass(frozen=True)
class Settings:
    """Where the server is, the key, and how patiently to retry."""

    base_url: str
    api_key: str
    max_retries: int = 3
    max_retry_wait: float = 60.0  # a Retry-After longer than this is not waited for

    @classmethod
    def resolve(
        cls, base_url: str | None, api_key: str | None, *, max_retries: int = 3
    ) -> Settings:
        """Arguments first, then GENGATE_URL / GENGATE_API_KEY.

        Raises ConfigurationError without a key or with a URL that is not http(s).
        """
        url = (base_url or os.environ.get("GENGATE_URL") or DEFAULT_URL).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"the server URL must be http(s)://host[:port], got {url!r}", field="url"
            )
        key = api_key or os.environ.get("GENGATE_API_KEY")
        if not key:
            raise ConfigurationError(
                "no API key: pass api_key or set GENGATE_API_KEY (`make run` saves a "
                "development key in var/dev-api-key)",
                field="api_key",
            )
        return cls(base_url=url, api_key=key.strip(), max_retries=max_retries)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


# ----------------------------------------------------------------------------- requests


def backoff(attempt: int, *, first: float = 0.5, cap: float = 8.0) -> float:
    return float(min(cap, first * 2**attempt))


def retry_after_of(response: httpx.Response) -> float | None:
    """Retry-After in seconds (a number, or an HTTP date), if the answer has one."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from(response: httpx.Response) -> ApiError:
    """The server's refusal as an ApiError: its message and field, from either surface's
    shape (`{"code", "msg", "data": {"error", "field", ...}}` or `{"message"}`)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    message: str | None = None
    field_name: str | None = None
    data: dict[str, Any] = {}
    if isinstance(body, dict):
        envelope_data = body.get("data")
        if isinstance(envelope_data, dict) and isinstance(envelope_data.get("error"), str):
            message = envelope_data["error"]
            named = envelope_data.get("field")
            field_name = named if isinstance(named, str) and named else None
            data = {k: v for k, v in envelope_data.items() if k not in ("error", "field")}
        elif isinstance(body.get("message"), str):
            message = body["message"]
        elif isinstance(body.get("msg"), str):
            message = body["msg"]
    if not message:
        message = f"HTTP {status} {response.reason_phrase}".strip()
    retry_after = retry_after_of(response)
    if retry_after is None and isinstance(data.get("retryAfter"), int | float):
        retry_after = float(data["retryAfter"])
    data.pop("retryAfter", None)
    return api_error_class(status)(
        message, status=status, field=field_name, retry_after=retry_after, data=data
    )


def request(
    settings: Settings, send: Send, *, retry: bool, ok: tuple[int, ...] = (200,)
) -> Plan[httpx.Response]:
    """Send `send`, retried (with the server's Retry-After, else backoff) when `retry` says
    doing it twice is safe. A connection that could not be opened is retried in any case:
    nothing was sent. Raises ApiError for an answer outside `ok`, ConnectionFailed."""
    attempt = 0
    while True:
        outcome = yield send
        if isinstance(outcome, httpx.TransportError):
            unsent = isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout)
            if (retry or unsent) and attempt < settings.max_retries:
                yield Sleep(backoff(attempt))
                attempt += 1
                continue
            raise ConnectionFailed(
                f"no answer from {settings.base_url}: {type(outcome).__name__}: {outcome}"
            ) from outcome
        response: httpx.Response = outcome
        if response.status_code in ok:
            return response
        error = error_from(response)
        wait = error.retry_after if error.retry_after is not None else backoff(attempt)
        if (
            retry
            and response.status_code in _RETRY_STATUSES
            and attempt < settings.max_retries
            and wait <= settings.max_retry_wait
        ):
            yield Sleep(wait)
            attempt += 1
            continue
        raise error


def _data(response: httpx.Response) -> Any:
    """The `data` of an /api/v1 envelope."""
    return response.json()["data"]


def _request_id_headers(request_id: str | None) -> dict[str, str]:
    return {"X-Request-Id": request_id} if request_id else {}


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# ----------------------------------------------------------------------------- calls


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


# ----------------------------------------------------------------------------- downloads


class FileSink:
    """Bytes of one result file: written beside their final name, hashed on the way, and
    renamed into place only when whole and matching the server's sha256."""

    def __init__(self, path: Path, *, sha256: str | None, size: int | None) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".part")
        self.expected_sha256 = sha256
        self.expected_size = size
        self._hash = hashlib.sha256()
        self._size = 0
        self._file: Any = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._hash, self._size = hashlib.sha256(), 0
        self._file = self.partial.open("wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self._size += len(chunk)

    def finish(self) -> Path:
        """Raises DownloadError when the bytes are not the server's (and keeps none)."""
        self._file.close()
        digest = self._hash.hexdigest()
        if self.expected_size is not None and self._size != self.expected_size:
            self.discard()
            raise DownloadError(
                f"{self.path.name}: got {self._size} bytes, the server has {self.expected_size}"
            )
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            self.discard()
            raise DownloadError(
                f"{self.path.name}: sha256 {digest} is not the server's {self.expected_sha256}"
            )
        self.partial.replace(self.path)
        return self.path

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        self.partial.unlink(missing_ok=True)


def _extension(content_type: str, url: str) -> str:
    guessed = mimetypes.guess_extension(content_type.split(";")[0].strip())
    if guessed:
        return ".jpg" if guessed in (".jpe", ".jpeg") else guessed
    return Path(urlsplit(url).path).suffix


def download(
    settings: Settings, task: Task | TaskItem | TaskCreated | str, directory: Path
) -> Plan[list[Path]]:
    """Every result file of a succeeded task, streamed into `directory` as
    `<task id>-<index><ext>`, each checked against the server's size and sha256.

    Raises TaskNotSucceeded for a task without results, DownloadError, ApiError.
    """
    task_id = task_id_of(task)
    if isinstance(task, Task | TaskCreated) and task.state != SUCCESS:
        raise TaskNotSucceeded(
            f"task {task_id} has no results: it is {task.state}", task_id=task_id, state=task.state
        )
    item = task if isinstance(task, TaskItem) else (yield from task_item(settings, task_id))
    if item.status != _COMPLETED:
        state = {0: "pending", 1: "processing", 3: "failed"}.get(item.status, str(item.status))
        raise TaskNotSucceeded(
            f"task {task_id} has no results: it is {state}", task_id=task_id, state=state
        )
    paths: list[Path] = []
    for asset_id in item.response.assets:
        found = yield from asset(settings, asset_id)
        target = directory / f"{task_id}-{found.index}{_extension(found.content_type, found.url)}"
        sink = FileSink(target, sha256=found.sha256, size=found.bytes)
        paths.append((yield from _fetch(settings, found.url, sink)))
    return paths


def task_id_of(task: Task | TaskItem | TaskCreated | str) -> str:
    if isinstance(task, str):
        return task
    return task.id if isinstance(task, TaskItem) else task.task_id


def _fetch(settings: Settings, url: str, sink: FileSink) -> Plan[Path]:
    attempt = 0
    while True:
        outcome = yield Fetch(url, sink)
        if isinstance(outcome, Path):
            return outcome
        retryable = isinstance(outcome, httpx.TransportError) or (
            isinstance(outcome, ApiError) and outcome.status in _RETRY_STATUSES
        )
        if retryable and attempt < settings.max_retries:
            yield Sleep(backoff(attempt))
            attempt += 1
            continue
        if isinstance(outcome, ApiError):
            raise DownloadError(f"{sink.path.name}: {outcome.status} {outcome.message}")
        raise DownloadError(f"{sink.path.name}: {type(outcome).__name__}: {outcome}") from outcome
