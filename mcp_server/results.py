"""Tool results in the seed's shape: pretty JSON text plus the same object structured."""

from __future__ import annotations

import json
import logging
from typing import Any

from mcp_types import CallToolResult, ContentBlock, TextContent
from pydantic import BaseModel

from app.core.errors import AppError

log = logging.getLogger("gengate.mcp")


def _text(payload: dict[str, Any]) -> TextContent:
    # indent=1 is the seed's own formatting: "{\n \"taskId\": ...}".
    return TextContent(type="text", text=json.dumps(payload, indent=1, ensure_ascii=False))


def success(model: BaseModel, extra: list[ContentBlock] | None = None) -> CallToolResult:
    payload = model.model_dump(mode="json", by_alias=True)
    return CallToolResult(
        content=[_text(payload), *(extra or [])], structured_content=payload, is_error=False
    )


def failure(exc: AppError) -> CallToolResult:
    payload = exc.payload()
    return CallToolResult(content=[_text(payload)], structured_content=payload, is_error=True)


def internal_failure(exc: Exception) -> CallToolResult:
    log.exception("tool failed", exc_info=exc)
    payload = {"error": "internal error"}
    return CallToolResult(content=[_text(payload)], structured_content=payload, is_error=True)
