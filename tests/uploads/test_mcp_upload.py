"""The MCP tool upload_image on a real server process: same service, same limits as REST."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import httpx
import pytest

from tests.mcp import conftest as mcp_fixtures
from tests.mcp.conftest import McpTarget, payload_text
from tests.uploads.conftest import MAX_BYTES, image_bytes

# The MCP tests' real server process and customer, for this module.
live = mcp_fixtures.live
target = mcp_fixtures.target


@pytest.fixture
def server_env(settings_env: dict[str, str]) -> dict[str, str]:
    # The server's own address is its public URL here, as after `make run`.
    return {k: v for k, v in settings_env.items() if k != "GENGATE_PUBLIC_URL"}


def _error(result: dict[str, Any], field: str) -> dict[str, Any]:
    assert result["isError"] is True, result
    error: dict[str, Any] = result["structuredContent"]
    assert payload_text(result) == error
    assert error["field"] == field, error
    return error


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_upload_image_is_listed_with_schemas(target: McpTarget, mode: str) -> None:
    async with target.client(mode) as client:
        listed = await client.list_tools()
    tool = {t.name: t for t in listed.tools}["upload_image"]
    assert tool.input_schema["required"] == ["data"]
    assert set(tool.input_schema["properties"]) == {"data", "filename", "content_type"}
    assert tool.output_schema is not None
    assert {"id", "url", "contentType", "bytes", "sha256", "expiresAt"} <= set(
        tool.output_schema["properties"]
    )


def test_upload_image_then_generate_from_it(target: McpTarget) -> None:
    data = image_bytes("JPEG", (80, 60))
    result = target.call(
        "upload_image",
        {"data": base64.b64encode(data).decode(), "filename": "cat.jpg"},
    )
    assert result["isError"] is False, result
    upload = result["structuredContent"]
    assert payload_text(result) == upload
    assert upload["contentType"] == "image/jpeg"
    assert (upload["width"], upload["height"], upload["bytes"]) == (80, 60, len(data))
    assert upload["sha256"] == hashlib.sha256(data).hexdigest()
    assert upload["url"].startswith(target.server.base_url + "/media/")
    downloaded = httpx.get(upload["url"], timeout=10)
    assert downloaded.status_code == 200 and downloaded.content == data

    created = target.call(
        "generate_image",
        {
            "model": "gpt-image-2-image-to-image",
            "prompt": "in watercolour",
            "image_urls": [upload["url"]],
        },
    )
    assert created["isError"] is False, created
    task_id = created["structuredContent"]["taskId"]
    deadline = time.monotonic() + 60
    while True:
        status = target.call("get_generation_status", {"taskId": task_id, "wait_seconds": 10})
        state = status["structuredContent"]["state"]
        if state != "waiting" or time.monotonic() > deadline:
            break
    assert state == "success", status["structuredContent"]
    assert json.loads(status["structuredContent"]["resultJson"])["resultUrls"]


def test_upload_image_errors_name_the_argument(target: McpTarget) -> None:
    _error(target.call("upload_image", {"data": "not base64 !"}), "data")
    _error(target.call("upload_image", {"data": ""}), "data")
    text = base64.b64encode(b"plain text, not a picture").decode()
    error = _error(target.call("upload_image", {"data": text}), "data")
    assert error["allowed"] == ["image/png", "image/jpeg", "image/webp", "image/gif"]
    png = base64.b64encode(image_bytes()).decode()
    _error(
        target.call("upload_image", {"data": png, "content_type": "application/pdf"}),
        "content_type",
    )
    big = base64.b64encode(image_bytes("PNG", (600, 600), compress_level=0)).decode()
    assert _error(target.call("upload_image", {"data": big}), "data")["limit"] == MAX_BYTES
