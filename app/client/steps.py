"""The steps a client plan yields, and the one that sends a request, with its retries.

A plan (app.client.plans, app.client.downloads) is a generator: it yields steps (send a
request, sleep, tell the caller's callback, fetch a file) and receives their outcomes;
`Client` and `AsyncClient` only carry the steps out, with httpx's sync or async API. So
retries, backoff, the wait loop, error parsing and download checks are written once and
behave the same in both.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx

from app.client.errors import ApiError, ConfigurationError, ConnectionFailed, api_error_class
from app.client.models import Task

if TYPE_CHECKING:
    from app.client.downloads import FileSink

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
# Statuses after which a request that is safe to send twice is sent again: over the limit,
# the server (or a proxy before it) away.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


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
    api_key: str = field(repr=False)
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
            and response.status_code in RETRY_STATUSES
            and attempt < settings.max_retries
            and wait <= settings.max_retry_wait
        ):
            yield Sleep(wait)
            attempt += 1
            continue
        raise error


USER_AGENT = "gengate-client/0.1"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class ClientBase:
    """What `Client` and `AsyncClient` share: where the server is and the key."""

    def __init__(self, base_url: str | None, api_key: str | None, *, max_retries: int) -> None:
        self.settings = Settings.resolve(base_url, api_key, max_retries=max_retries)

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}({self.base_url!r})"
