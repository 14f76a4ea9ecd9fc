"""The MCP tools: each parses its arguments, calls the jobs/accounts services, shapes a result."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.service import describe_account
from app.catalog.schemas import ModelRead
from app.core import metrics
from app.core.errors import AppError, InvalidInput
from app.core.text import check_text
from app.db.engine import transaction
from app.jobs.schemas import TaskCreate, TaskCreated, TaskRead
from app.jobs.service import cancel_task, check_request_id, create_task, estimate_task
from app.jobs.views import describe_task, get_task, read_task, result_files
from app.media.thumbnails import make_thumbnail
from mcp_server import results
from mcp_server.context import Caller, caller_of, sent_arguments

MAX_WAIT_SECONDS = 50
_PROGRESS_SLICE_S = 0.5
Ctx = Context[Any, Any]


class ModelList(BaseModel):
    models: list[ModelRead]


async def run_tool(
    ctx: Ctx, work: Callable[[AsyncSession, Caller], Awaitable[BaseModel | CallToolResult]]
) -> CallToolResult:
    """One transaction per call; domain errors become `isError` results with their payload.

    `work` answers a model (sent as JSON text + structuredContent) or a result it shaped.
    """
    caller = caller_of(ctx)
    tool = tool_name(ctx)
    try:
        async with transaction(caller.runtime.sessions) as session:
            answer = await work(session, caller)
        metrics.tool_called(tool)
        return answer if isinstance(answer, CallToolResult) else results.success(answer)
    except AppError as exc:
        metrics.tool_called(tool, exc)
        return results.failure(exc)
    except Exception as exc:
        metrics.tool_called(tool, exc)
        return results.internal_failure(exc)


def tool_name(ctx: Ctx) -> str:
    """The called tool's name: the SDK only calls a tool under the name it was registered
    with, so it is a bounded metrics label."""
    return str((ctx.request_context.params or {}).get("name"))


def _present(arguments: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arguments.items() if v is not None}


def _number(args: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = args.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value:
        raise InvalidInput(f"{name} must be a number from {low:g} to {high:g}", field=name)
    return min(float(value), high)


def _flag(args: dict[str, Any], name: str) -> bool:
    value = args.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be a boolean", field=name)
    return value


def integer_argument(args: dict[str, Any], name: str, problem: str) -> int | None:
    """An integer argument (not a boolean, not 2.0); `problem` is the refusal's text."""
    value = args.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(problem, field=name)
    return value


def string_argument(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name)
    return check_text(value, field=name)


def create_arguments(caller: Caller) -> tuple[dict[str, Any], str | None]:
    """The generation arguments as sent (unknown ones included: the service refuses them),
    and the idempotency key: a `request_id` argument, else the X-Request-Id header."""
    args = _present(sent_arguments())
    request_id = args.pop("request_id", None)
    if request_id is not None:
        return args, check_request_id(request_id, field="request_id")
    return args, caller.request_id


async def list_models(ctx: Ctx, **arguments: Any) -> CallToolResult:
    async def work(_session: AsyncSession, caller: Caller) -> BaseModel:
        media_type = string_argument(arguments, "mediaType")
        models = caller.runtime.catalog.list(media_type)
        return ModelList(models=[ModelRead.of(m) for m in models])

    return await run_tool(ctx, work)


def _generate(media_type: Literal["image", "video"]) -> Callable[..., Any]:
    async def generate(ctx: Ctx, **arguments: Any) -> CallToolResult:
        async def work(session: AsyncSession, caller: Caller) -> BaseModel:
            args, request_id = create_arguments(caller)
            spec = TaskCreate.from_arguments(args, media_type=media_type)
            created = await create_task(
                session,
                runtime=caller.runtime,
                principal=caller.principal,
                spec=spec,
                request_id=request_id,
            )
            return TaskCreated.of(created.task)

        return await run_tool(ctx, work)

    return generate


generate_image = _generate("image")
generate_video = _generate("video")


async def estimate_cost(ctx: Ctx, **arguments: Any) -> CallToolResult:
    async def work(session: AsyncSession, caller: Caller) -> BaseModel:
        args, _request_id = create_arguments(caller)
        spec = TaskCreate.from_arguments(args)
        return await estimate_task(
            session, runtime=caller.runtime, principal=caller.principal, spec=spec
        )

    return await run_tool(ctx, work)


async def get_generation_status(ctx: Ctx, **arguments: Any) -> CallToolResult:
    caller = caller_of(ctx)
    tool = tool_name(ctx)
    try:
        wait_seconds = _number(arguments, "wait_seconds", 0, MAX_WAIT_SECONDS)
        thumbnail = _flag(arguments, "include_thumbnail")
        async with caller.runtime.sessions() as session:
            view = await read_task(
                session,
                runtime=caller.runtime,
                principal=caller.principal,
                task_id=string_argument(arguments, "taskId"),
                base_url=caller.base_url,
            )
            await session.commit()
        if wait_seconds and view.state == "waiting":
            view = await _wait(ctx, caller, view, wait_seconds)
        blocks = await _result_blocks(caller, view, thumbnail)
        metrics.tool_called(tool)
        return results.success(view, blocks)
    except AppError as exc:
        metrics.tool_called(tool, exc)
        return results.failure(exc)
    except Exception as exc:
        metrics.tool_called(tool, exc)
        return results.internal_failure(exc)


async def _wait(ctx: Ctx, caller: Caller, view: TaskRead, seconds: float) -> TaskRead:
    """Poll the task (no session held while waiting) until done or out of time."""
    deadline = time.monotonic() + seconds
    reported: tuple[int, int | None] | None = None
    while view.state == "waiting":
        if (view.progress, view.queue_position) != reported:
            reported = (view.progress, view.queue_position)
            await ctx.report_progress(view.progress, 100, _stage_message(view))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await caller.runtime.notifier.wait_finished(
            view.task_id, within_s=min(_PROGRESS_SLICE_S, remaining)
        )
        async with caller.runtime.sessions() as session:
            task = await get_task(session, principal=caller.principal, task_id=view.task_id)
            view = await describe_task(
                session, runtime=caller.runtime, task=task, base_url=caller.base_url
            )
    if view.state != "waiting":
        await ctx.report_progress(100, 100, view.state)
    return view


def _stage_message(view: TaskRead) -> str | None:
    if view.queue_position is None:
        return view.stage
    return f"{view.stage}, position {view.queue_position} in the queue"


async def _result_blocks(caller: Caller, view: TaskRead, thumbnail: bool) -> list[ContentBlock]:
    """A resource_link per result file, and on request an inline preview of each.

    The links carry the very URLs of the view's resultJson: minting them again could cross
    a second and sign them differently.
    """
    if view.state != "success" or view.result_json is None:
        return []
    async with caller.runtime.sessions() as session:
        task = await get_task(session, principal=caller.principal, task_id=view.task_id)
        files = await result_files(
            session, runtime=caller.runtime, task=task, base_url=caller.base_url
        )
    urls = json.loads(view.result_json)["resultUrls"]
    blocks: list[ContentBlock] = []
    for f, url in zip(files, urls, strict=True):
        blocks.append(
            ResourceLink(
                type="resource_link",
                uri=url,
                name=f.name,
                mime_type=f.content_type,
                size=f.size_bytes,
            )
        )
        if thumbnail:
            data = await asyncio.to_thread(
                make_thumbnail, caller.runtime.media_store, f.path, f.content_type
            )
            blocks.append(
                ImageContent(
                    type="image", data=base64.b64encode(data).decode(), mime_type="image/webp"
                )
            )
    return blocks


async def cancel_task_tool(ctx: Ctx, **arguments: Any) -> CallToolResult:
    async def work(session: AsyncSession, caller: Caller) -> BaseModel:
        task = await cancel_task(
            session,
            runtime=caller.runtime,
            principal=caller.principal,
            task_id=string_argument(arguments, "taskId"),
        )
        return await describe_task(
            session, runtime=caller.runtime, task=task, base_url=caller.base_url
        )

    return await run_tool(ctx, work)


async def get_account(ctx: Ctx, **_arguments: Any) -> CallToolResult:
    async def work(session: AsyncSession, caller: Caller) -> BaseModel:
        return await describe_account(
            session, settings=caller.runtime.settings, principal=caller.principal
        )

    return await run_tool(ctx, work)
