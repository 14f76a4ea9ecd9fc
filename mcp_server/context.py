"""What a tool call knows about its caller, handed over by the gateway in the ASGI scope."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context

from app.keys.service import Principal
from app.runtime import Runtime

SCOPE_KEY = "gengate_caller"

# The arguments exactly as the client sent them. The SDK hands a tool only the parameters it
# declares and drops the rest; the services must see the rest too, to refuse unknown inputs.
SENT_ARGUMENTS: ContextVar[dict[str, Any]] = ContextVar("sent_arguments")


@dataclass(frozen=True)
class Caller:
    runtime: Runtime
    principal: Principal
    request_id: str | None  # the X-Request-Id header, if any
    base_url: str


def caller_of(ctx: Context[Any, Any]) -> Caller:
    request = ctx.request_context.request
    caller: Caller = request.scope["state"][SCOPE_KEY]  # type: ignore[union-attr]
    return caller


def sent_arguments() -> dict[str, Any]:
    """The current tool call's arguments as sent, unknown ones included."""
    return dict(SENT_ARGUMENTS.get({}))
