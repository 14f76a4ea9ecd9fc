"""REST transport of the /v1 surface (seed 004): imagine, reimagine, task history, one task,
one asset.

Errors here are the seed's `{"message": "..."}`, not the /api/v1 envelope. V1Route renders
them: it asks the app's own exception handler for the answer (so status, message and
headers such as Retry-After / RateLimit-* are the same as everywhere), then keeps only the
message. Later /v1 routes (imagine, reimagine) use the same route class.

| failure | status | body |
|---|---|---|
| bad body field or query parameter | 400 | `{"message": "<field> ..."}` |
| missing or unknown key | 401 | `{"message": "authentication failed"}` + WWW-Authenticate |
| key without tasks:read (reads) or tasks:create (imagine) | 403 | `{"message": ...}` |
| credits short for the whole request (nothing is created) | 402 | `{"message": ...}` |
| X-Request-Id reused with another body | 409 | `{"message": ...}` |
| unknown or another key's task, asset | 404 | `{"message": "task not found"}` (or asset) |
| over the rate limit (imagine: createTask's, n counted) | 429 | `{"message": ...}` + Retry-After |
| database or Redis outage | 503 | `{"message": ...}` + Retry-After |
| anything unexpected | 500 | `{"message": "internal error"}` |
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse

from app.api.deps import PrincipalDep, RequestIdHeader, RuntimeDep, SessionDep
from app.core.text import SafeText
from app.imagine.schemas import N_MAX, StyleList, StyleRead, TaskIds
from app.imagine.service import imagine, reimagine
from app.jobs.views import base_url_of
from app.tasks.schemas import AssetRead, Message, TaskItem, TaskPage
from app.tasks.service import (
    PAGE_MAX,
    PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
    list_tasks,
    read_asset,
    read_task,
)

_DROPPED_HEADERS = frozenset({"content-length", "content-type"})


class _MessageResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        # ASCII-escaped: a message may quote what the client sent (see app.api.errors).
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


async def message_error(request: Request, exc: Exception) -> Response:
    """The app's answer to `exc`, with its status and headers, as `{"message": ...}`."""
    handler = _handler_for(request, exc)
    answer = await handler(request, exc)
    try:
        envelope = json.loads(bytes(answer.body))
        message = str(envelope.get("msg") or envelope["data"]["error"])
    except (ValueError, KeyError, TypeError, AttributeError):
        message = "internal error" if answer.status_code >= 500 else "request failed"
    headers = {k: v for k, v in answer.headers.items() if k.lower() not in _DROPPED_HEADERS}
    return _MessageResponse({"message": message}, answer.status_code, headers)


Handler = Callable[[Request, Exception], Coroutine[Any, Any, Response]]


def _handler_for(request: Request, exc: Exception) -> Handler:
    handlers: dict[Any, Handler] = request.app.exception_handlers
    for kind in type(exc).__mro__:
        if kind in handlers:
            return handlers[kind]
    raise exc  # no handler at all: let the server's last resort answer


class V1Route(APIRoute):
    """A route whose every error is the seed's `{"message"}` shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_with_messages(request: Request) -> Response:
            try:
                return await handle(request)
            except Exception as exc:
                return await message_error(request, exc)

        return handle_with_messages


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Message} for status in (400, 401, 403, 404, 429, 500)
}
_CREATE_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Message} for status in (402, 409)
}
router = APIRouter(prefix="/v1", tags=["imagine"], route_class=V1Route, responses=_ERRORS)

_LIST_EXAMPLE = {
    "total": 1,
    "page": 1,
    "pageSize": 100,
    "totalIsEstimate": False,
    "tasks": [
        {
            "id": "task-uuid-1",
            "model": "gpt-image-1",
            "style": "",
            "cost": 10,
            "request": {
                "n": 1,
                "model": "gpt-image-1",
                "prompt": "A beautiful sunset over mountain peaks",
                "reference": ["https://example.com/ref1.jpg", "https://example.com/ref2.jpg"],
            },
            "response": {"assets": ["asset-uuid-1", "asset-uuid-2"]},
            "status": 2,
            "startedAt": "2025-06-11T15:18:42Z",
            "finishedAt": "2025-06-11T15:20:37Z",
            "createdAt": "2025-06-11T15:18:42Z",
            "updatedAt": "2025-06-11T15:20:37Z",
        }
    ],
}


def _day(description: str) -> Any:
    # Checked by the service (which MCP shares); declared here so the schema says it.
    return Query(
        max_length=10,
        description=f"{description}, YYYY-MM-DD",
        json_schema_extra={"format": "date"},
    )


def _json(model: TaskPage | TaskItem | AssetRead | TaskIds | StyleList) -> Response:
    return Response(model.model_dump_json(by_alias=True), media_type="application/json")


@router.get(
    "/tasks",
    summary="A page of your tasks, newest first",
    response_model=TaskPage,
    responses={200: {"content": {"application/json": {"example": _LIST_EXAMPLE}}}},
)
async def tasks(
    session: SessionDep,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    model: Annotated[SafeText | None, Query(max_length=100, description="Model name")] = None,
    status: Annotated[
        int | None, Query(ge=0, le=3, description="0 pending, 1 processing, 2 completed, 3 failed")
    ] = None,
    start: Annotated[str | None, _day("First day (UTC, inclusive)")] = None,
    end: Annotated[str | None, _day("Last day (UTC, inclusive); not before start")] = None,
    page: Annotated[int, Query(ge=1, le=PAGE_MAX, description="Page number, from 1")] = 1,
    page_size: Annotated[
        int, Query(alias="pageSize", ge=1, le=PAGE_SIZE_MAX, description="Tasks a page")
    ] = PAGE_SIZE_DEFAULT,
) -> Response:
    result = await list_tasks(
        session,
        runtime=runtime,
        principal=principal,
        model=model,
        status=status,
        start=start,
        end=end,
        page=page,
        page_size=page_size,
    )
    return _json(result)


@router.get("/tasks/{task_id}", summary="One of your tasks", response_model=TaskItem)
async def task(
    session: SessionDep,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    task_id: Annotated[SafeText, Path(max_length=200)],
) -> Response:
    return _json(await read_task(session, runtime=runtime, principal=principal, task_id=task_id))


@router.get(
    "/assets/{asset_id}",
    summary="One result file of your tasks, with a fresh signed URL",
    response_model=AssetRead,
)
async def asset(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    asset_id: Annotated[SafeText, Path(max_length=200)],
) -> Response:
    base_url = base_url_of(runtime, str(request.base_url))
    result = await read_asset(
        session, runtime=runtime, principal=principal, asset_id=asset_id, base_url=base_url
    )
    return _json(result)


# The seed's examples, verbatim.
_IMAGINE_EXAMPLE = {
    "n": 2,
    "model": "gpt-image-1",
    "style": "",
    "prompt": "A beautiful sunset over mountain peaks",
    "reference": ["https://example.com/ref1.jpg", "https://example.com/ref2.jpg"],
}
_REIMAGINE_EXAMPLE = {"task_id": "task-uuid-2", "index": 1, "action": "upscale"}
ImagineBody = Annotated[
    dict[str, Any],
    Body(
        description=f"`n` (1-{N_MAX}, default 1), `model` (chosen from the request when "
        "absent: image-to-image with `reference`, else text-to-image), `style` (a named style, "
        '"" for none), `prompt`, `reference` (URLs), optional `callback_url`, and the '
        "model's own parameters beside them (see GET /api/v1/models).",
        examples=[_IMAGINE_EXAMPLE],
    ),
]
ReimagineBody = Annotated[
    dict[str, Any],
    Body(
        description="`task_id` (a completed task of yours), `index` (1-based, over its "
        "assets), `action` (upscale | variation | reroll), optional `prompt`, `reference` "
        "and `callback_url`.",
        examples=[_REIMAGINE_EXAMPLE],
    ),
]


@router.post(
    "/imagine",
    summary="Create n generation tasks from one request, all or none",
    response_model=TaskIds,
    responses={
        **_CREATE_ERRORS,
        200: {
            "content": {"application/json": {"example": {"ids": ["task-uuid-1", "task-uuid-2"]}}}
        },
    },
)
async def imagine_route(
    body: ImagineBody,
    session: SessionDep,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    request_id: RequestIdHeader = None,
) -> Response:
    result = await imagine(
        session, runtime=runtime, principal=principal, body=body, request_id=request_id
    )
    return _json(result)


@router.post(
    "/reimagine",
    summary="Upscale, vary or reroll one asset of a completed task",
    response_model=TaskIds,
    responses={
        **_CREATE_ERRORS,
        200: {"content": {"application/json": {"example": {"ids": ["task-uuid-3"]}}}},
    },
)
async def reimagine_route(
    request: Request,
    body: ReimagineBody,
    session: SessionDep,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    request_id: RequestIdHeader = None,
) -> Response:
    result = await reimagine(
        session,
        runtime=runtime,
        principal=principal,
        body=body,
        request_id=request_id,
        base_url=base_url_of(runtime, str(request.base_url)),
    )
    return _json(result)


@router.get("/styles", summary="The styles imagine takes", response_model=StyleList)
async def styles(_principal: PrincipalDep, runtime: RuntimeDep) -> Response:
    listed = [
        StyleRead(name=s.name, description=s.description, prompt=s.prompt, params=dict(s.params))
        for s in runtime.styles.all()
    ]
    return _json(StyleList(styles=listed))
