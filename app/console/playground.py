"""Playground: pick a model, fill in the form its catalog schema makes, see the price as the
parameters change (the API's estimate), create the task (as jobs.createTask does, charged
to the signed-in key's account under its limits) and watch it until its result shows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.api.deps import RuntimeDep, SessionDep
from app.catalog.catalog import CatalogModel
from app.console.schema_form import form_fields, form_inputs
from app.console.session import ConsoleUser, CsrfUserDep, UserDep
from app.console.tasks import describe_refusal, new_request_id
from app.console.templating import render
from app.core.errors import AppError, InvalidInput
from app.db.engine import transaction
from app.jobs.schemas import TaskCreate
from app.jobs.service import create_task, estimate_task
from app.runtime import Runtime

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/playground")
async def playground_page(
    request: Request,
    user: UserDep,
    runtime: RuntimeDep,
    model: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    try:
        chosen = runtime.catalog.get(model) if model else runtime.catalog.list()[0]
    except InvalidInput as unknown:
        return _page(
            request,
            user,
            runtime,
            runtime.catalog.list()[0],
            error=describe_refusal(unknown),
            status=unknown.status,
        )
    return _page(request, user, runtime, chosen)


@router.post("/playground/estimate")
async def estimate(
    request: Request, user: CsrfUserDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """The price of the form as it stands (htmx swaps it in as the parameters change)."""
    form = await _form(request)
    try:
        spec = _spec(runtime, form)
        priced = await estimate_task(session, runtime=runtime, principal=user.principal, spec=spec)
    except AppError as refused:
        return render(
            request,
            "playground_estimate.html",
            {"estimate": None, "problem": describe_refusal(refused)},
            user=user,
            status_code=refused.status,
        )
    return render(request, "playground_estimate.html", {"estimate": priced}, user=user)


@router.post("/playground")
async def create(request: Request, user: CsrfUserDep, runtime: RuntimeDep) -> Response:
    """Create the task. htmx gets the run panel (which polls the task) and a fresh request
    id for the next create; a plain form post goes to the task's page."""
    form = await _form(request)
    htmx = bool(request.headers.get("HX-Request"))
    try:
        spec = _spec(runtime, form)
        # A transaction of its own: a refusal rolls back whatever the create had written.
        async with transaction(runtime.sessions) as creating:
            result = await create_task(
                creating,
                runtime=runtime,
                principal=user.principal,
                spec=spec,
                request_id=form.get("request_id") or None,
            )
    except AppError as refused:
        if not htmx:
            chosen = _model_or_first(runtime, form.get("model"))
            return _page(
                request,
                user,
                runtime,
                chosen,
                values=form,
                error=describe_refusal(refused),
                status=refused.status,
            )
        return _run(request, user, error=refused)
    if not htmx:
        return RedirectResponse(f"/console/gallery/{result.task.id}", status_code=303)
    answer = _run(request, user, task_id=result.task.id)
    answer.headers["HX-Trigger"] = "balance-changed"  # the estimate shows the new balance
    return answer


def _run(
    request: Request,
    user: ConsoleUser,
    *,
    task_id: str | None = None,
    error: AppError | None = None,
) -> Response:
    return render(
        request,
        "playground_run.html",
        {
            "task_id": task_id,
            "problem": describe_refusal(error) if error else None,
            "problem_field": error.details.get("field") if error else None,
            "request_id": new_request_id(),
        },
        user=user,
        status_code=error.status if error else 200,
    )


async def _form(request: Request) -> dict[str, str]:
    """The submitted fields as text (a repeated field keeps its first value; files are not
    taken)."""
    form = await request.form()
    return {name: value for name, value in form.items() if isinstance(value, str)}


def _spec(runtime: Runtime, form: Mapping[str, str]) -> TaskCreate:
    """The create request a form stands for. Raises InvalidInput naming the field."""
    model = runtime.catalog.get(form.get("model") or None)
    return TaskCreate(model=model.id, input=form_inputs(model, form))


def _model_or_first(runtime: Runtime, model_id: str | None) -> CatalogModel:
    try:
        return runtime.catalog.get(model_id)
    except InvalidInput:
        return runtime.catalog.list()[0]


def _page(
    request: Request,
    user: ConsoleUser,
    runtime: Runtime,
    model: CatalogModel,
    *,
    values: Mapping[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    context: dict[str, Any] = {
        "models": runtime.catalog.list(),
        "model": model,
        "fields": form_fields(model),
        "values": values or {},
        "request_id": new_request_id(),
        "error": error,
    }
    return render(request, "playground.html", context, user=user, status_code=status)
