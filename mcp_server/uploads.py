"""The MCP tool `upload_image`: agents pass a local image as base64 and get a URL to use."""

from __future__ import annotations

from typing import Any

from mcp_types import CallToolResult
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.uploads.service import ALLOWED_TYPES, MAX_FILENAME, create_upload, upload_from_base64
from mcp_server.context import Caller
from mcp_server.tools import Ctx, run_tool

DESCRIPTION = (
    "Upload an image (PNG, JPEG, WebP or GIF) given as base64, for use as an input: pass the "
    "returned url in input_urls / image_urls of generate_image or generate_video. The URL "
    "works until expiresAt."
)
PROPERTIES: dict[str, dict[str, Any]] = {
    "data": {
        "type": "string",
        "description": "The image bytes, base64 (or a data:image/...;base64, URL)",
    },
    "filename": {
        "type": "string",
        "maxLength": MAX_FILENAME,
        "description": "The file's name, for your records; optional",
    },
    "content_type": {
        "type": "string",
        "enum": list(ALLOWED_TYPES),
        "description": "Optional; the type is always detected from the bytes",
    },
}


async def upload_image(ctx: Ctx, **arguments: Any) -> CallToolResult:
    async def work(session: AsyncSession, caller: Caller) -> BaseModel:
        source = upload_from_base64(
            arguments.get("data"),
            content_type=arguments.get("content_type"),
            filename=arguments.get("filename"),
            max_bytes=caller.runtime.settings.upload_max_bytes,
            content_type_field="content_type",
        )
        return await create_upload(
            session,
            runtime=caller.runtime,
            principal=caller.principal,
            source=source,
            base_url=caller.base_url,
        )

    return await run_tool(ctx, work)
