from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response
from pydantic import BaseModel

from app.api.deps import PrincipalDep, RequestIdHeader, RuntimeDep, SessionDep
from app.api.envelope import Envelope, error_responses, ok, ok_json
from app.callbacks.schemas import CallbackList
from app.callbacks.service import read_callbacks, redeliver_callback
from app.core.text import SafeText
from app.db.engine import transaction
from app.jobs.schemas import EstimateRead, TaskCreate, TaskCreated, TaskRead
from app.jobs.service import cancel_task, create_task, estimate_task
from app.jobs.views import base_url_of, describe_task, read_task_json

router = APIRouter(
    prefix="/api/v1/jobs", tags=["jobs"], responses=error_responses(400, 401, 403, 429)
)

_CREATE_EXAMPLE = {
    "model": "gpt-image-2-text-to-image",
    "input": {"prompt": "A clean product photo", "aspect_ratio": "1:1"},
    "callBackUrl": "https://your-domain.com/webhooks/gengate",
}
# Parsed as a plain object and validated by the jobs service against the model's inputs (the
# seed's error texts); its OpenAPI schema, one variant per model, comes from the catalog.
CreateBody = Annotated[
    dict[str, Any],
    Body(
        description="`model`, the inputs (inside `input`, or directly beside `model`), and "
        "optionally `callBackUrl` / `callbackUrl`. See GET /api/v1/models for inputs.",
        examples=[_CREATE_EXAMPLE],
    ),
]
TaskIdQuery = Annotated[SafeText, Query(alias="taskId", min_length=1, max_length=200)]


def _ok(data: BaseModel) -> Response:
    """The success envelope, serialised once here. Hot routes return it as a Response, which
    FastAPI sends as is instead of validating it again against `response_model`."""
    body = ok(data).model_dump_json(by_alias=True)
    return Response(body, media_type="application/json")


@router.post(
    "/createTask",
    summary="Create a generation task",
    response_model=Envelope[TaskCreated],
    responses=error_responses(402, 409),
)
async def create(
    body: CreateBody,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    request_id: RequestIdHeader = None,
) -> Response:
    async with transaction(runtime.sessions) as session:
        result = await create_task(
            session,
            runtime=runtime,
            principal=principal,
            spec=TaskCreate.from_arguments(body),
            request_id=request_id,
        )
    return _ok(TaskCreated.of(result.task))


@router.get(
    "/recordInfo",
    summary="A task's state and results",
    response_model=Envelope[TaskRead],
    responses={
        **error_responses(404),
        304: {"description": "Not modified: `If-None-Match` names the current ETag"},
    },
)
async def record_info(
    request: Request,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    task_id: TaskIdQuery,
    if_none_match: Annotated[
        str | None,
        Header(
            alias="If-None-Match",
            max_length=2000,
            description="The ETag of an answer you hold: 304 while the task has not changed",
        ),
    ] = None,
) -> Response:
    """Every answer carries an ETag; polling with `If-None-Match` costs no body while the
    task has not changed."""
    view = await read_task_json(
        runtime=runtime,
        principal=principal,
        task_id=task_id,
        base_url=base_url_of(runtime, str(request.base_url)),
    )
    headers = {"ETag": view.etag}
    held = _etags(if_none_match)
    if view.etag in held or "*" in held:
        return Response(status_code=304, headers=headers)
    return Response(ok_json(view.body), media_type="application/json", headers=headers)


def _etags(if_none_match: str | None) -> set[str]:
    """The entity tags an If-None-Match lists, weak ones compared as strong (RFC 9110)."""
    if not if_none_match:
        return set()
    return {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}


@router.post("/estimate", summary="The price of a request; nothing is created")
async def estimate(
    body: CreateBody, session: SessionDep, principal: PrincipalDep, runtime: RuntimeDep
) -> Envelope[EstimateRead]:
    spec = TaskCreate.from_arguments(body)
    return ok(await estimate_task(session, runtime=runtime, principal=principal, spec=spec))


@router.post(
    "/cancel",
    summary="Cancel a waiting task; its credits come back",
    responses=error_responses(404, 409),
)
async def cancel(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    task_id: TaskIdQuery,
) -> Envelope[TaskRead]:
    task = await cancel_task(session, runtime=runtime, principal=principal, task_id=task_id)
    base_url = base_url_of(runtime, str(request.base_url))
    return ok(await describe_task(session, runtime=runtime, task=task, base_url=base_url))


@router.get(
    "/callbacks",
    summary="A task's callback deliveries and every attempt",
    response_model=Envelope[CallbackList],
    responses=error_responses(404),
)
async def callbacks(
    session: SessionDep, principal: PrincipalDep, runtime: RuntimeDep, task_id: TaskIdQuery
) -> Envelope[CallbackList]:
    return ok(await read_callbacks(session, runtime=runtime, principal=principal, task_id=task_id))


@router.post(
    "/callbacks/redeliver",
    summary="Send a finished task's callback again (a new webhook-id)",
    response_model=Envelope[CallbackList],
    responses=error_responses(404, 409),
)
async def redeliver(
    session: SessionDep, principal: PrincipalDep, runtime: RuntimeDep, task_id: TaskIdQuery
) -> Envelope[CallbackList]:
    return ok(
        await redeliver_callback(session, runtime=runtime, principal=principal, task_id=task_id)
    )
