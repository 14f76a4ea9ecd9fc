"""The SDK's own client over real streamable HTTP: the 2025 handshake and the 2026 protocol."""

import base64
import io
import json

import httpx
import pytest
from mcp_types import ImageContent, ResourceLink, TextContent
from PIL import Image

from app.catalog.catalog import load_catalog
from tests.mcp.conftest import McpTarget

MODES = ["legacy", "2026-07-28"]
TOOLS = {
    "list_models",
    "generate_image",
    "generate_video",
    "imagine",
    "reimagine",
    "get_generation_status",
    "list_tasks",
    "cancel_task",
    "estimate_cost",
    "get_account",
    "upload_image",
}


@pytest.mark.parametrize("mode", MODES)
async def test_tools_are_described_with_input_and_output_schemas(
    target: McpTarget, mode: str
) -> None:
    async with target.client(mode) as client:
        listed = await client.list_tools()
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and tool.output_schema, tool.name
    image = tools["generate_image"].input_schema["properties"]
    # The catalog's image models, in its order.
    assert image["model"]["enum"] == [m.id for m in load_catalog().list("image")]
    assert image["model"]["enum"][:2] == ["gpt-image-2-text-to-image", "gpt-image-2-image-to-image"]
    assert {
        "prompt",
        "aspect_ratio",
        "resolution",
        "quality",
        "output_format",
        "input_urls",
        "image_urls",
        "input",
        "callBackUrl",
        "callbackUrl",
        "request_id",
    } <= set(image)
    assert set(image["quality"]["enum"]) == {"low", "medium", "high"}
    video = tools["generate_video"].input_schema["properties"]
    assert {"duration", "generate_audio", "image_urls", "resolution"} <= set(video)
    assert "1080p" in video["resolution"]["enum"]
    status = tools["get_generation_status"].input_schema
    assert (
        status["required"] == ["taskId"] and status["properties"]["wait_seconds"]["maximum"] == 50
    )


@pytest.mark.parametrize("mode", MODES)
async def test_generate_wait_link_download(target: McpTarget, mode: str) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with target.client(mode) as client:
        created = await client.call_tool(
            "generate_image",
            {
                "model": "gpt-image-2-text-to-image",
                "prompt": "slow one [[delay:400]]",
                "aspect_ratio": "16:9",
                "output_format": "webp",
            },
        )
        assert created.is_error is False and created.structured_content is not None
        task_id = created.structured_content["taskId"]
        status = await client.call_tool(
            "get_generation_status",
            {"taskId": task_id, "wait_seconds": 30, "include_thumbnail": True},
            progress_callback=on_progress,
        )
    assert status.is_error is False and status.structured_content is not None
    data = status.structured_content
    assert data["state"] == "success", data
    assert progress and progress[-1][0] == 100 and progress[-1][1] == 100
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)
    text, link, thumb = status.content
    assert isinstance(text, TextContent) and json.loads(text.text) == data
    assert isinstance(link, ResourceLink) and link.mime_type == "image/webp"
    assert str(link.uri) == json.loads(data["resultJson"])["resultUrls"][0]
    downloaded = httpx.get(str(link.uri), timeout=10)
    picture = Image.open(io.BytesIO(downloaded.content))
    assert picture.format == "WEBP" and abs(picture.size[0] / picture.size[1] - 16 / 9) < 0.02
    assert isinstance(thumb, ImageContent) and thumb.mime_type == "image/webp"
    preview = Image.open(io.BytesIO(base64.b64decode(thumb.data)))
    assert preview.format == "WEBP" and max(preview.size) <= 512


@pytest.mark.parametrize("mode", MODES)
async def test_the_other_tools(target: McpTarget, mode: str) -> None:
    async with target.client(mode) as client:
        models = await client.call_tool("list_models", {"mediaType": "video"})
        assert models.structured_content is not None
        assert {m["type"] for m in models.structured_content["models"]} == {"video"}

        estimate = await client.call_tool(
            "estimate_cost",
            {"model": "seedance-2.0-text-to-video", "prompt": "x", "duration": "10"},
        )
        assert (
            estimate.structured_content is not None and estimate.structured_content["credits"] > 0
        )

        account = await client.call_tool("get_account", {})
        assert account.structured_content is not None
        before = account.structured_content["balance"]
        assert account.structured_content["tier"] == "pro"

        created = await client.call_tool(
            "generate_video",
            {"model": "seedance-2.0-text-to-video", "prompt": "stay [[delay:5000]]", "duration": 5},
        )
        assert created.structured_content is not None
        task_id = created.structured_content["taskId"]
        canceled = await client.call_tool("cancel_task", {"taskId": task_id})
        assert canceled.structured_content is not None
        assert (canceled.structured_content["state"], canceled.structured_content["failCode"]) == (
            "fail",
            "canceled",
        )

        listed = await client.call_tool("list_tasks", {"status": 3, "pageSize": 5})
        assert listed.structured_content is not None
        assert [t["id"] for t in listed.structured_content["tasks"]] == [task_id]
        assert isinstance(listed.content[0], TextContent) and task_id in listed.content[0].text

        after = await client.call_tool("get_account", {})
        assert (
            after.structured_content is not None and after.structured_content["balance"] == before
        )
