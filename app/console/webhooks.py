"""Webhooks: the account's signing secret (show, roll) and its callback deliveries with
their attempts, each redeliverable."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import RuntimeDep, SessionDep
from app.callbacks.service import (
    parse_delivery_cursor,
    read_account_deliveries,
    read_webhook_secret,
    redeliver_callback,
    roll_secret,
)
from app.console.session import ConsoleUser, CsrfUserDep, UserDep
from app.console.templating import render
from app.core.errors import AppError, PermissionDenied

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE_SIZE = 20


@router.get("/webhooks")
async def webhooks_page(
    request: Request,
    user: UserDep,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=80)] = None,
    rolled: bool = False,
    redelivered: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    message = None
    if rolled:
        message = "New signing secret made; the previous one keeps signing for 24 hours."
    elif redelivered:
        message = f"Callback of task {redelivered} queued for delivery again."
    return await _page(request, user, session, cursor=cursor, message=message)


@router.post("/webhooks/roll")
async def roll(user: CsrfUserDep, session: SessionDep) -> Response:
    await roll_secret(session, principal=user.principal)
    return RedirectResponse("/console/webhooks?rolled=true", status_code=303)


@router.post("/webhooks/redeliver")
async def redeliver(
    request: Request,
    user: CsrfUserDep,
    session: SessionDep,
    runtime: RuntimeDep,
    task_id: Annotated[str, Form(min_length=1, max_length=40)],
) -> Response:
    try:
        await redeliver_callback(
            session, runtime=runtime, principal=user.principal, task_id=task_id
        )
    except AppError as refused:
        return await _page(request, user, session, error=refused.message, status=refused.status)
    return RedirectResponse(f"/console/webhooks?redelivered={task_id}", status_code=303)


async def _page(
    request: Request,
    user: ConsoleUser,
    session: AsyncSession,
    *,
    cursor: str | None = None,
    status: int = 200,
    **context: Any,
) -> Response:
    secret, secret_error = None, None
    try:
        secret = await read_webhook_secret(session, principal=user.principal)
    except PermissionDenied as denied:  # a key without keys:manage still sees deliveries
        secret_error = denied.message
    deliveries = await read_account_deliveries(
        session, principal=user.principal, limit=PAGE_SIZE, before=parse_delivery_cursor(cursor)
    )
    return render(
        request,
        "webhooks.html",
        {
            "secret": secret,
            "secret_error": secret_error,
            "deliveries": deliveries,
            "first_page": cursor is None,
            **context,
        },
        user=user,
        status_code=status,
    )
