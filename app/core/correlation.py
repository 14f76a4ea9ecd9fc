"""The correlation id: one per HTTP request, followed into the task it creates and the worker
(and callback delivery) that runs that task, so every log line of one piece of work shares it.

It travels in a contextvar, which asyncio copies into every task a coroutine starts: a
request's lines, and a worker's lines for one task, carry it without being handed it.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar
from typing import NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Where a client finds the id of its request (X-Request-Id is this API's idempotency key).
RESPONSE_HEADER = b"x-correlation-id"
# W3C Trace Context, version 00: version-traceid-parentid-flags, lowercase hex. A later
# version may append fields after a dash; version ff is invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_PARENT = "0" * 32, "0" * 16


class LogContext(NamedTuple):
    correlation_id: str | None = None
    task_id: str | None = None


_UNNAMED = LogContext()
_current: ContextVar[LogContext] = ContextVar("gengate_log_context", default=_UNNAMED)


def current() -> LogContext:
    return _current.get()


def bind(*, correlation_id: str | None, task_id: str | None = None) -> None:
    """Name the work of the running asyncio task (and of the tasks it starts from now on).

    For a coroutine run as a task of its own (a worker's task, a callback's delivery):
    its context is a copy that ends with it, so nothing leaks to the next piece of work.
    """
    _current.set(LogContext(correlation_id, task_id))


def new_correlation_id() -> str:
    """Shaped like a W3C trace id, so either kind reads the same in the logs."""
    return secrets.token_hex(16)


def trace_id_of(traceparent: str) -> str | None:
    """The trace id of a valid `traceparent` header, else None (an invalid one is ignored,
    as the specification asks)."""
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return None
    version, trace_id, parent_id, _flags, extra = match.groups()
    if version == "ff" or (version == "00" and extra is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    return trace_id


def _request_correlation_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"traceparent":
            return trace_id_of(value.decode("latin-1").strip()) or new_correlation_id()
    return new_correlation_id()


class CorrelationMiddleware:
    """Give every HTTP request its correlation id: the trace id of its `traceparent`, else a
    new one; in the contextvar while it runs and in the `X-Correlation-Id` answer header.

    Pure ASGI (one header scan, one contextvar set and a wrapped `send`): it sits in front
    of every request, the hot ones included.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = _request_correlation_id(scope)
        header = (RESPONSE_HEADER, correlation_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        token = _current.set(LogContext(correlation_id))
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
