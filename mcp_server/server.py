"""The MCP server: tool registry, the two transports (JSON and SSE) and their lifespan."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import BaseModel

from app import __version__
from app.accounts.schemas import AccountRead
from app.catalog.catalog import Catalog
from app.core import metrics
from app.core.config import Settings
from app.core.names import unknown_field
from app.imagine.schemas import TaskIds
from app.imagine.styles import Styles
from app.jobs.schemas import EstimateRead, TaskCreated, TaskRead
from app.tasks.schemas import TaskPage
from app.uploads.schemas import UploadRead
from mcp_server import imagine, results, task_history, tools, uploads
from mcp_server.arguments import media_properties, with_parameters
from mcp_server.context import SENT_ARGUMENTS

MCP_PATH = "/api/mcp"
_TASK_ID = {
    "type": "string",
    "description": "A taskId from generate_image, generate_video, imagine or reimagine",
}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    fn: Callable[..., Any]
    properties: dict[str, dict[str, Any]]
    output: type[BaseModel]
    required: tuple[str, ...] = ()
    read_only: bool = True
    # Generation arguments go to the jobs service whole: it refuses unknown ones with the
    # model's own input list, the same words as over REST.
    names_checked_by_service: bool = False


def tool_specs(catalog: Catalog, styles: Styles | None = None) -> list[ToolSpec]:
    """Every tool; `styles` (when given) lists the imagine styles in its schema."""
    image, video = media_properties(catalog, "image"), media_properties(catalog, "video")
    estimate = {**image, **video, "model": {"type": "string", "enum": catalog.ids}}
    del estimate["request_id"]
    return [
        ToolSpec(
            "list_models",
            "List available image and video generation models, with their inputs and prices.",
            tools.list_models,
            {
                "mediaType": {
                    "type": "string",
                    "enum": ["image", "video"],
                    "description": "image or video; omit for all",
                }
            },
            tools.ModelList,
        ),
        ToolSpec(
            "generate_image",
            "Create an image generation task and return a taskId. Pass inputs directly or in "
            "`input`. Poll with get_generation_status.",
            tools.generate_image,
            image,
            TaskCreated,
            ("model",),
            read_only=False,
            names_checked_by_service=True,
        ),
        ToolSpec(
            "generate_video",
            "Create a video generation task and return a taskId. Pass inputs directly or in "
            "`input`. Poll with get_generation_status.",
            tools.generate_video,
            video,
            TaskCreated,
            ("model",),
            read_only=False,
            names_checked_by_service=True,
        ),
        ToolSpec(
            "imagine",
            imagine.IMAGINE_DESCRIPTION,
            imagine.imagine_tool,
            imagine.imagine_properties(catalog, styles),
            TaskIds,
            read_only=False,
            names_checked_by_service=True,
        ),
        ToolSpec(
            "reimagine",
            imagine.REIMAGINE_DESCRIPTION,
            imagine.reimagine_tool,
            imagine.REIMAGINE_PROPERTIES,
            TaskIds,
            ("task_id", "index", "action"),
            read_only=False,
        ),
        ToolSpec(
            "get_generation_status",
            "Query task status and result URLs. With wait_seconds (at most 50) it waits for the "
            "task to finish and reports progress.",
            tools.get_generation_status,
            {
                "taskId": _TASK_ID,
                "wait_seconds": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 50,
                    "description": "Wait up to this many seconds (at most 50) for a final state",
                },
                "include_thumbnail": {
                    "type": "boolean",
                    "default": False,
                    "description": "Also return an inline WebP preview (at most 512 px)",
                },
            },
            TaskRead,
            ("taskId",),
        ),
        ToolSpec(
            "list_tasks",
            task_history.DESCRIPTION,
            task_history.list_tasks_tool,
            task_history.PROPERTIES,
            TaskPage,
        ),
        ToolSpec(
            "cancel_task",
            "Cancel a waiting task: it fails with failCode canceled and its credits come back.",
            tools.cancel_task_tool,
            {"taskId": _TASK_ID},
            TaskRead,
            ("taskId",),
            read_only=False,
        ),
        ToolSpec(
            "estimate_cost",
            "The credits a generation request would cost, validated like generate_*; "
            "nothing is created.",
            tools.estimate_cost,
            estimate,
            EstimateRead,
            ("model",),
            names_checked_by_service=True,
        ),
        ToolSpec(
            "get_account",
            "Your account: credit balance, tier and rate limits.",
            tools.get_account,
            {},
            AccountRead,
        ),
        ToolSpec(
            "upload_image",
            uploads.DESCRIPTION,
            uploads.upload_image,
            uploads.PROPERTIES,
            UploadRead,
            ("data",),
            read_only=False,
        ),
    ]


class _SentArgumentsTool(Tool):
    """A tool that refuses arguments it does not declare and keeps the arguments as sent
    for the call (see context.SENT_ARGUMENTS)."""

    names_checked_by_service: bool = False

    async def run(self, arguments: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        declared = self.parameters.get("properties", {})
        unknown = sorted(str(name) for name in arguments if name not in declared)
        if unknown and not self.names_checked_by_service:
            refusal = unknown_field(unknown[0], declared, what="argument")
            metrics.tool_called(self.name, refusal)
            return results.failure(refusal)
        token = SENT_ARGUMENTS.set(arguments)
        try:
            return await super().run(arguments, *args, **kwargs)
        finally:
            SENT_ARGUMENTS.reset(token)


def _tool(spec: ToolSpec) -> Tool:
    async def bound(ctx: tools.Ctx, **arguments: Any) -> CallToolResult:
        result: CallToolResult = await spec.fn(ctx, **arguments)
        return result

    bound.__annotations__ = {"ctx": tools.Ctx}
    bound.__name__ = spec.name
    fn = with_parameters(bound, spec.properties, returns=Annotated[CallToolResult, spec.output])
    tool = Tool.from_function(
        fn,
        name=spec.name,
        description=spec.description,
        annotations=ToolAnnotations(
            read_only_hint=spec.read_only, destructive_hint=False, open_world_hint=False
        ),
    )
    # Required in the published schema, but checked by the services (for the seed's texts).
    parameters = copy.deepcopy(tool.parameters)
    if spec.required:
        parameters["required"] = list(spec.required)
    fields = {name: getattr(tool, name) for name in Tool.model_fields if name != "parameters"}
    return _SentArgumentsTool(
        **fields,
        parameters=parameters,
        names_checked_by_service=spec.names_checked_by_service,
    )


def _security(settings: Settings) -> TransportSecuritySettings:
    hosts = [h for host in settings.allowed_hosts for h in (host, f"{host}:*")]
    origins = [
        o
        for host in settings.allowed_hosts
        for o in (f"http://{host}", f"http://{host}:*", f"https://{host}", f"https://{host}:*")
    ]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


@dataclass
class McpSurface:
    server: MCPServer[Any]
    json_manager: StreamableHTTPSessionManager
    sse_manager: StreamableHTTPSessionManager

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Both session managers run for the app's lifetime (each can run once)."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.json_manager.run())
            await stack.enter_async_context(self.sse_manager.run())
            yield


def build_mcp(settings: Settings, catalog: Catalog, styles: Styles | None = None) -> McpSurface:
    server: MCPServer[Any] = MCPServer(
        "gengate",
        version=__version__,
        instructions="Generate images and videos. generate_image / generate_video return a "
        "taskId, imagine up to 8 at once; get_generation_status (with wait_seconds) returns "
        "the result URLs; reimagine upscales, varies or rerolls a result.",
        tools=[_tool(spec) for spec in tool_specs(catalog, styles)],
        log_level="WARNING",
    )
    security = _security(settings)
    managers = []
    # Two transports over one server: JSON answers for clients that do not accept SSE
    # (plain curl), SSE for those that do (so progress notifications reach them).
    for json_response in (True, False):
        server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            json_response=json_response,
            stateless_http=True,
            transport_security=security,
        )
        managers.append(server.session_manager)
    return McpSurface(server=server, json_manager=managers[0], sse_manager=managers[1])
