"""The MCP tool `list_tasks`: GET /v1/tasks (seed 004) with its filters and pages, plus a
resource link to every result file on the page."""

from __future__ import annotations

from typing import Any

from mcp_types import CallToolResult, ContentBlock, ResourceLink
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.ids import now_ms
from app.media.service import list_tasks_media, media_extension, media_url
from app.tasks.schemas import TaskItem, TaskPage
from app.tasks.service import PAGE_MAX, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, list_tasks
from mcp_server import results
from mcp_server.context import Caller
from mcp_server.tools import Ctx, integer_argument, run_tool, string_argument

STATUS_NAMES = {0: "pending", 1: "processing", 2: "completed", 3: "failed"}
_STATUS_PROBLEM = "status must be one of 0 (pending), 1 (processing), 2 (completed), 3 (failed)"

DESCRIPTION = (
    "List your tasks, newest first, as GET /v1/tasks does: filter by model, status "
    "(0 pending, 1 processing, 2 completed, 3 failed) and creation day (start/end, "
    "YYYY-MM-DD, UTC, inclusive); page from 1. Completed tasks' files come as resource links."
)
PROPERTIES: dict[str, dict[str, Any]] = {
    "model": {"type": "string", "maxLength": 100, "description": "Only this model's tasks"},
    "status": {
        "type": "integer",
        "enum": list(STATUS_NAMES),
        "description": "Only tasks in this status: 0 pending, 1 processing, 2 completed, 3 failed",
    },
    "start": {
        "type": "string",
        "format": "date",
        "description": "First day (UTC, inclusive), YYYY-MM-DD",
    },
    "end": {
        "type": "string",
        "format": "date",
        "description": "Last day (UTC, inclusive), YYYY-MM-DD; not before start",
    },
    "page": {
        "type": "integer",
        "minimum": 1,
        "maximum": PAGE_MAX,
        "default": 1,
        "description": "Page number, from 1",
    },
    "pageSize": {
        "type": "integer",
        "minimum": 1,
        "maximum": PAGE_SIZE_MAX,
        "default": PAGE_SIZE_DEFAULT,
        "description": "Tasks a page",
    },
}


async def list_tasks_tool(ctx: Ctx, **arguments: Any) -> CallToolResult:
    async def work(session: AsyncSession, caller: Caller) -> CallToolResult:
        page = integer_argument(arguments, "page", f"page must be an integer from 1 to {PAGE_MAX}")
        page_size = integer_argument(
            arguments, "pageSize", f"pageSize must be an integer from 1 to {PAGE_SIZE_MAX}"
        )
        listed = await list_tasks(
            session,
            runtime=caller.runtime,
            principal=caller.principal,
            model=string_argument(arguments, "model"),
            status=integer_argument(arguments, "status", _STATUS_PROBLEM),
            start=string_argument(arguments, "start"),
            end=string_argument(arguments, "end"),
            page=1 if page is None else page,
            page_size=PAGE_SIZE_DEFAULT if page_size is None else page_size,
        )
        links = await _asset_links(session, caller, listed.tasks)
        return results.success(listed, links, text=summary(listed))

    return await run_tool(ctx, work)


async def _asset_links(
    session: AsyncSession, caller: Caller, tasks: list[TaskItem]
) -> list[ContentBlock]:
    """A resource_link per result file of the page's tasks, each URL freshly signed."""
    runtime = caller.runtime
    ttl_s, now_s = runtime.settings.media_url_ttl_seconds, now_ms() // 1000
    links: list[ContentBlock] = []
    with_assets = [task.id for task in tasks if task.response.assets]
    files = await list_tasks_media(session, task_ids=with_assets)
    for task_id in with_assets:
        for f in files.get(task_id, []):
            url = media_url(
                f, base_url=caller.base_url, secret=runtime.signing_secret, ttl_s=ttl_s, now_s=now_s
            )
            links.append(
                ResourceLink(
                    type="resource_link",
                    uri=url,
                    name=f"{task_id}-{f.position + 1}.{media_extension(f.content_type)}",
                    description=f"asset {f.id}: result {f.position + 1} of task {task_id}",
                    mime_type=f.content_type,
                    size=f.size_bytes,
                )
            )
    return links


def summary(page: TaskPage) -> str:
    """The page for a reader: one line per task; the full objects are in structuredContent."""
    if not page.tasks:
        return f"No tasks on page {page.page} (total {page.total})."
    first = (page.page - 1) * page.page_size + 1
    last = first + len(page.tasks) - 1
    total = f"at least {page.total}" if page.total_is_estimate else str(page.total)
    lines = [f"Tasks {first}-{last} of {total}, newest first:"]
    lines += [f"- {_line(task)}" for task in page.tasks]
    if last < page.total or page.total_is_estimate:
        lines.append(f"More: page={page.page + 1}.")
    return "\n".join(lines)


def _line(task: TaskItem) -> str:
    parts = [task.id, task.model, STATUS_NAMES.get(task.status, str(task.status))]
    if task.response.assets:
        parts.append(f"{len(task.response.assets)} asset(s)")
    parts += [f"cost {task.cost}", f"created {task.created_at}"]
    if task.parent_task_id:
        parts.append(f"{task.action} of {task.parent_task_id} #{task.index}")
    return ", ".join(parts)
