"""One error hierarchy for every transport.

`message` is the stable, client-facing text (the seed's exact wording where it names one);
`details` carries extra machine-readable fields. REST maps an AppError to its status and
envelope once, MCP to an `isError` tool result once.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def payload(self) -> dict[str, Any]:
        return {"error": self.message, **self.details}


class InvalidInput(AppError):
    status = 400


class AuthenticationFailed(AppError):
    status = 401

    def __init__(self, reason: str) -> None:
        super().__init__("authentication failed", reason=reason)


class PermissionDenied(AppError):
    status = 403


class InsufficientCredits(AppError):
    status = 402

    def __init__(self, **details: Any) -> None:
        super().__init__("insufficient credits", **details)


class NotFound(AppError):
    status = 404


class Conflict(AppError):
    status = 409


class RateLimited(AppError):
    status = 429


class TooManyActiveTasks(AppError):
    status = 429

    def __init__(self, *, limit: int) -> None:
        super().__init__("too many active tasks", limit=limit)


# Long enough for a database restart or a failover to finish, short enough that a client
# retrying on it does not wait past the outage by much.
OUTAGE_RETRY_AFTER_S = 5


class ServiceUnavailable(AppError):
    """The database or Redis cannot be reached for now (see app.core.outages)."""

    status = 503

    def __init__(self, *, retry_after: int = OUTAGE_RETRY_AFTER_S) -> None:
        super().__init__("service temporarily unavailable", retryAfter=retry_after)
