"""Tool results in the seed's shape: pretty JSON text (or a summary) plus the object structured."""

from __future__ import annotations

import json
import logging
from typing import Any

from mcp_types import CallToolResult, ContentBlock, TextContent
from pydantic import BaseModel

from app.core.errors import AppError, ServiceUnavailable
from app.core.outages import is_outage

log = logging.getLogger("gengate.mcp")


def _text(payload: dict[str, Any]) -> TextContent:
    # indent=1 is the seed's own formatting: "{\n \"taskId\": ...}".
    return TextContent(type="text", text=json.dumps(payload, indent=1, ensure_ascii=False))


def success(
    model: BaseModel, extra: list[ContentBlock] | None = None, *, text: str | None = None
) -> CallToolResult:
    """`model` structured; as text its JSON, or `text` (a summary) where the JSON is long."""
    payload = model.model_dump(mode="json", by_alias=True)
    first = _text(payload) if text is None else TextContent(type="text", text=text)
    return CallToolResult(
        content=[first, *(extra or [])], structured_content=payload, is_error=False
    )


def failure(exc: AppError) -> CallToolResult:
    payload = exc.payload()
    return CallToolResult(content=[_text(payload)], structured_content=payload, is_error=True)


def internal_failure(exc: Exception) -> CallToolResult:
    """An exception no service turned into an AppError: a database or Redis outage becomes
    the unavailable tool error (with retryAfter), anything else a logged internal error."""
    if is_outage(exc):
        log.warning("tool answered unavailable: %s", type(exc).__name__)
        return failure(exc if isinstance(exc, ServiceUnavailable) else ServiceUnavailable())
    log.exception("tool failed", exc_info=exc)
    payload = {"error": "internal error"}
    return CallToolResult(content=[_text(payload)], structured_content=payload, is_error=True)
