"""The MCP tools `imagine` and `reimagine`: POST /v1/imagine and /v1/reimagine (seed 004).

Arguments are the REST bodies' own fields. A model's own parameters (aspect_ratio, quality,
...) go in the `params` object, or beside the fields as over REST: both reach the service
as one flat body. `params` is what the schema publishes because many clients let a model
send only declared arguments (Gemini's function declarations and OpenAI's strict mode drop
or refuse undeclared ones), while a declared free-form object passes everywhere.
"""

from __future__ import annotations

from typing import Any

from mcp_types import CallToolResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.catalog import Catalog
from app.core.errors import InvalidInput
from app.imagine.schemas import ACTIONS, N_MAX, TaskIds
from app.imagine.service import imagine, reimagine
from app.imagine.styles import Styles
from mcp_server import results
from mcp_server.arguments import CREATE_EXTRAS
from mcp_server.context import Caller
from mcp_server.tools import Ctx, create_arguments, run_tool

IMAGINE_DESCRIPTION = (
    f"Create 1-{N_MAX} generation tasks from one prompt, as POST /v1/imagine does: a model "
    "(omitted: chosen for you, for an image from `reference` when given), a named style, "
    "reference URLs, and the model's own inputs in `params` (see list_models). Returns the "
    "tasks' ids; follow them with get_generation_status or list_tasks."
)
REIMAGINE_DESCRIPTION = (
    "Upscale, vary or reroll result `index` (from 1) of one of your completed tasks, as "
    "POST /v1/reimagine does. Returns the new task's id; list_tasks shows its parentTaskId, "
    "action and index."
)
_COMMON: dict[str, dict[str, Any]] = {
    "prompt": {"type": "string", "description": "What to make (some models need none)"},
    "reference": {
        "type": "array",
        "items": {"type": "string", "format": "uri"},
        "description": "Reference material URLs (upload_image gives one for a local file)",
    },
    "callback_url": {
        "type": "string",
        "format": "uri",
        "description": "URL gengate POSTs each task to once it succeeds or fails, signed per "
        "Standard Webhooks with the account's whsec_ secret",
    },
    "request_id": CREATE_EXTRAS["request_id"],
}


def imagine_properties(catalog: Catalog, styles: Styles | None) -> dict[str, dict[str, Any]]:
    style: dict[str, Any] = {"type": "string", "description": 'Style name; "" or omitted: none'}
    if styles is not None:
        style["enum"] = ["", *styles.names]
    return {
        "n": {
            "type": "integer",
            "minimum": 1,
            "maximum": N_MAX,
            "default": 1,
            "description": "How many tasks to create",
        },
        "model": {
            "type": "string",
            "enum": catalog.ids,
            "description": "Model id (see list_models); omitted: chosen for you",
        },
        "style": style,
        **_COMMON,
        "params": {
            "type": "object",
            "description": "The model's own inputs (see list_models), e.g. "
            '{"aspect_ratio": "16:9"}; they may also be passed as arguments of their own',
        },
    }


REIMAGINE_PROPERTIES: dict[str, dict[str, Any]] = {
    "task_id": {"type": "string", "description": "A completed task of yours"},
    "index": {"type": "integer", "minimum": 1, "description": "Which of its results, from 1"},
    "action": {
        "type": "string",
        "enum": list(ACTIONS),
        "description": "upscale: a larger copy; variation: a new take on it; reroll: the task "
        "again with new results",
    },
    **_COMMON,
}


async def imagine_tool(ctx: Ctx, **_arguments: Any) -> CallToolResult:
    async def work(session: AsyncSession, caller: Caller) -> CallToolResult:
        body, request_id = create_arguments(caller)
        created = await imagine(
            session,
            runtime=caller.runtime,
            principal=caller.principal,
            body=_flatten(body),
            request_id=request_id,
        )
        return results.success(created, text=_created(created))

    return await run_tool(ctx, work)


async def reimagine_tool(ctx: Ctx, **_arguments: Any) -> CallToolResult:
    async def work(session: AsyncSession, caller: Caller) -> CallToolResult:
        body, request_id = create_arguments(caller)
        created = await reimagine(
            session,
            runtime=caller.runtime,
            principal=caller.principal,
            body=body,
            request_id=request_id,
            base_url=caller.base_url,
        )
        lineage = f"{body.get('action')} of result {body.get('index')} of {body.get('task_id')}"
        return results.success(created, text=_created(created, lineage))

    return await run_tool(ctx, work)


def _flatten(arguments: dict[str, Any]) -> dict[str, Any]:
    """The REST body: `params` spread beside the other fields. Raises InvalidInput."""
    body = dict(arguments)
    params = body.pop("params", None)
    if params is None:
        return body
    if not isinstance(params, dict):
        raise InvalidInput("params must be an object of the model's inputs", field="params")
    for name, value in params.items():
        if name in body:
            raise InvalidInput(
                f"{name} is given both inside params and beside it; give it once",
                field=f"params.{name}",
            )
        body[name] = value
    return body


def _created(created: TaskIds, lineage: str | None = None) -> str:
    what = f"1 task ({lineage})" if lineage else f"{len(created.ids)} task(s)"
    return (
        f"Created {what}: {', '.join(created.ids)}. Follow each with get_generation_status "
        "(taskId; wait_seconds to wait for its result), or all with list_tasks."
    )
