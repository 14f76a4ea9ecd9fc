"""Gallery: the signed-in key's tasks newest first (GET /v1/tasks's service), with their
images and videos, filters by model, state and days, and paging."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.api.deps import RuntimeDep, SessionDep
from app.console.session import UserDep
from app.console.tasks import STATE_NAMES, base_url, describe_refusal
from app.console.templating import render
from app.core.errors import AppError, InvalidInput
from app.tasks.detail import task_assets
from app.tasks.service import PAGE_MAX, list_tasks

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE_SIZE = 12
Text = Annotated[str, Query(max_length=200)]


@router.get("/gallery")
async def gallery_page(
    request: Request,
    user: UserDep,
    session: SessionDep,
    runtime: RuntimeDep,
    model: Text = "",
    state: Text = "",
    start: Text = "",
    end: Text = "",
    page: Text = "1",
) -> Response:
    filters = {"model": model, "state": state, "start": start, "end": end}
    context: dict[str, Any] = {
        "filters": filters,
        "models": runtime.catalog.ids,
        "state_names": STATE_NAMES,
        "tasks": [],
        "assets": {},
        "page": 1,
        "pages": 0,
        "total": 0,
    }
    try:
        number = _page_number(page)
        listed = await list_tasks(
            session,
            runtime=runtime,
            principal=user.principal,
            model=model or None,
            status=_state_code(state),
            start=start or None,
            end=end or None,
            page=number,
            page_size=PAGE_SIZE,
        )
    except AppError as refused:
        context["error"] = describe_refusal(refused)
        return render(request, "gallery.html", context, user=user, status_code=refused.status)
    assets = await task_assets(
        session,
        runtime=runtime,
        task_ids=[t.id for t in listed.tasks],
        base_url=base_url(request, runtime),
    )
    kept = {name: value for name, value in filters.items() if value}
    context.update(
        tasks=listed.tasks,
        assets=assets,
        total=listed.total,
        total_is_estimate=listed.total_is_estimate,
        page=number,
        pages=-(-listed.total // PAGE_SIZE),
        newer=_link(kept, number - 1) if number > 1 else None,
        older=_link(kept, number + 1) if number * PAGE_SIZE < listed.total else None,
    )
    return render(request, "gallery.html", context, user=user)


def _page_number(page: str) -> int:
    """Raises InvalidInput."""
    number = int(page) if page.strip().isdigit() else 0
    if not 1 <= number <= PAGE_MAX:
        raise InvalidInput(f"page must be an integer from 1 to {PAGE_MAX}", field="page")
    return number


def _state_code(state: str) -> int | None:
    """The filter's state as list_tasks's status code. Raises InvalidInput."""
    if not state:
        return None
    for code, name in STATE_NAMES.items():
        if name == state:
            return code
    names = ", ".join(STATE_NAMES.values())
    raise InvalidInput(f"state must be one of {names}", field="state")


def _link(filters: dict[str, str], page: int) -> str:
    return "/console/gallery?" + urlencode({**filters, "page": page})
