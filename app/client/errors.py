"""What the client raises. Every error carries the server's message and, where the server
named one, the field at fault; API errors also carry the HTTP status and, for 429 and 503,
how long the server asked to wait (Retry-After)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.client.models import Task


class GengateError(Exception):
    """Base of every client error."""

    status: int | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def details(self) -> dict[str, Any]:
        """What the error says beyond its message and field, for reports."""
        return {}


class ConfigurationError(GengateError):
    """The client was not told where the server is or which key to use."""


class ConnectionFailed(GengateError):
    """The server could not be reached, or the connection broke before an answer."""


class ApiError(GengateError):
    """The server refused a request: its status, message, field and other details."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        field: str | None = None,
        retry_after: float | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.status = status
        self.retry_after = retry_after
        self.data = data or {}

    def details(self) -> dict[str, Any]:
        extra = {"status": self.status, **self.data}
        if self.retry_after is not None:
            extra["retryAfter"] = self.retry_after
        return extra

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.status}: {self.message}{where}"


class BadRequest(ApiError):
    """400: an input the server refused; `field` names it."""


class AuthenticationError(ApiError):
    """401: no key, or a key the server does not know (or revoked)."""


class InsufficientCredits(ApiError):
    """402: the account cannot pay for the request; nothing was created."""


class PermissionDenied(ApiError):
    """403: the key lacks the scope the request needs."""


class NotFound(ApiError):
    """404: no such task or asset for this key."""


class Conflict(ApiError):
    """409: e.g. a request id reused with another body."""


class RateLimited(ApiError):
    """429: over a rate limit or the active-task limit; `retry_after` says how long to wait."""


class ServerError(ApiError):
    """5xx: the server could not answer (503 carries Retry-After)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: AuthenticationError,
    402: InsufficientCredits,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}


def api_error_class(status: int) -> type[ApiError]:
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, ApiError)


class WaitTimeout(GengateError):
    """The task was still waiting when `wait` gave up; `task` is its last known state."""

    def __init__(self, message: str, *, task: Task) -> None:
        super().__init__(message)
        self.task = task

    def details(self) -> dict[str, Any]:
        return {"taskId": self.task.task_id, "state": self.task.state}


class TaskNotSucceeded(GengateError):
    """A task that has no results to download (still waiting, or failed)."""

    def __init__(self, message: str, *, task_id: str, state: str) -> None:
        super().__init__(message, field="task")
        self.task_id = task_id
        self.state = state

    def details(self) -> dict[str, Any]:
        return {"taskId": self.task_id, "state": self.state}


class DownloadError(GengateError):
    """A result file that could not be fetched whole, or whose bytes are not the server's."""


class TaskFailed(GengateError):
    """A task that ended in `fail` where a result was needed; `task` says why."""

    def __init__(self, task: Task) -> None:
        code = task.fail_code or "failed"
        super().__init__(f"task {task.task_id} failed: {code}: {task.fail_msg or ''}".rstrip(": "))
        self.task = task

    def details(self) -> dict[str, Any]:
        return {
            "taskId": self.task.task_id,
            "failCode": self.task.fail_code,
            "task": self.task.to_json(),
        }
