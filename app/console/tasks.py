"""One task in the console: its detail page (request, cost, times, files, lineage), the
status fragment the playground and the detail page poll while it waits, and the upscale /
variation / reroll actions (app.imagine.service.reimagine)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import RuntimeDep, SessionDep
from app.console.session import ConsoleUser, CsrfUserDep, UserDep
from app.console.templating import render
from app.core.errors import AppError
from app.db.engine import transaction
from app.imagine.schemas import ACTIONS
from app.imagine.service import reimagine
from app.jobs.views import base_url_of, read_task
from app.runtime import Runtime
from app.tasks.detail import read_task_detail, task_assets
from app.tasks.service import STATUS_CODES

router = APIRouter(prefix="/console", include_in_schema=False)
TaskIdPath = Annotated[str, Path(min_length=1, max_length=200)]
# /v1 status codes by name, for labels: 0 queued, 1 generating, 2 success, 3 fail.
STATE_NAMES = {code: status for status, code in STATUS_CODES.items()}


def describe_refusal(refused: AppError) -> str:
    """A refusal as one line for a page: the service's message, led by the field it names
    when the message does not already start with it, and what a 402 or 429 needs."""
    details = refused.details
    message = refused.message
    field = details.get("field")
    if field and not message.startswith(str(field)):
        message = f"{field}: {message}"
    if "required" in details and "balance" in details:
        message += (
            f" (this needs {details['required']} credits; the balance is {details['balance']})"
        )
    allowed = details.get("allowed")
    if isinstance(allowed, list) and allowed and str(allowed[0]) not in message:
        message += " (allowed: " + ", ".join(map(str, allowed)) + ")"
    retry_after = details.get("retryAfter")
    if retry_after is not None:
        message += f"; try again in {retry_after} s"
    elif "limit" in details:
        message += f" (at most {details['limit']})"
    return message


def new_request_id() -> str:
    """The idempotency key a create form carries, so a double submit creates one task."""
    return "console-" + secrets.token_urlsafe(18)


def base_url(request: Request, runtime: Runtime) -> str:
    return base_url_of(runtime, str(request.base_url))


@router.get("/gallery/{task_id}")
async def task_page(
    request: Request,
    user: UserDep,
    session: SessionDep,
    runtime: RuntimeDep,
    task_id: TaskIdPath,
) -> Response:
    return await _detail(request, user, session, runtime, task_id)


@router.get("/gallery/{task_id}/status")
async def task_status(
    request: Request,
    user: UserDep,
    session: SessionDep,
    runtime: RuntimeDep,
    task_id: TaskIdPath,
    refresh: bool = False,
) -> Response:
    """The fragment a waiting task polls: it replaces itself until the task is done. With
    `refresh` (the task's own page), a finished task reloads the page instead, so its
    facts, files and actions show as they now are."""
    try:
        context = await status_context(request, user, session, runtime, task_id)
    except AppError as refused:
        return render(
            request,
            "task_status.html",
            {
                "view": None,
                "status_error": describe_refusal(refused),
                # Over the rate limit or a passing outage: it keeps asking.
                "retry_task_id": task_id if refused.status in (429, 503) else None,
            },
            user=user,
            status_code=refused.status,
        )
    answer = render(request, "task_status.html", {**context, "refresh": refresh}, user=user)
    if refresh and context["view"].state != "waiting":
        answer.headers["HX-Refresh"] = "true"
    return answer


async def status_context(
    request: Request, user: ConsoleUser, session: AsyncSession, runtime: Runtime, task_id: str
) -> dict[str, Any]:
    """What task_status.html shows: recordInfo's view (stage, queue position, progress),
    and the files once it succeeded. Raises what read_task raises."""
    urls_base = base_url(request, runtime)
    view = await read_task(
        session, runtime=runtime, principal=user.principal, task_id=task_id, base_url=urls_base
    )
    assets: list[Any] = []
    if view.state == "success":
        found = await task_assets(session, runtime=runtime, task_ids=[task_id], base_url=urls_base)
        assets = found.get(task_id, [])
    return {"view": view, "assets": assets}


@router.post("/gallery/{task_id}/reimagine")
async def reimagine_task(
    request: Request,
    user: CsrfUserDep,
    session: SessionDep,
    runtime: RuntimeDep,
    task_id: TaskIdPath,
    action: Annotated[str, Form(max_length=40)] = "",
    index: Annotated[str, Form(max_length=20)] = "1",
    request_id: Annotated[str | None, Form(max_length=200)] = None,
) -> Response:
    """Upscale, vary or reroll one file of the task; the new task's page shows its lineage."""
    body: dict[str, Any] = {
        "task_id": task_id,
        "action": action,
        "index": int(index) if index.strip().isdigit() else index,
    }
    try:
        # A transaction of its own, so a refusal rolls back whatever the create had written.
        async with transaction(runtime.sessions) as creating:
            created = await reimagine(
                creating,
                runtime=runtime,
                principal=user.principal,
                body=body,
                request_id=request_id or None,
                base_url=base_url(request, runtime),
            )
    except AppError as refused:
        return await _detail(
            request,
            user,
            session,
            runtime,
            task_id,
            error=describe_refusal(refused),
            status=refused.status,
        )
    return RedirectResponse(f"/console/gallery/{created.ids[0]}", status_code=303)


async def _detail(
    request: Request,
    user: ConsoleUser,
    session: AsyncSession,
    runtime: Runtime,
    task_id: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    detail = await read_task_detail(
        session,
        runtime=runtime,
        principal=user.principal,
        task_id=task_id,
        base_url=base_url(request, runtime),
    )
    status_now = await status_context(request, user, session, runtime, task_id)
    return render(
        request,
        "task.html",
        {
            "detail": detail,
            "state_names": STATE_NAMES,
            "actions": ACTIONS,
            "request_id": new_request_id(),
            "error": error,
            "refresh": True,
            **status_now,
        },
        user=user,
        status_code=status,
    )
