"""Sign-in and sign-out pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.console.service import sign_in
from app.console.session import (
    CsrfUserDep,
    console_user,
    require_csrf,
    safe_next,
    set_session_cookie,
    sign_out,
)
from app.console.templating import render
from app.core.errors import AuthenticationFailed
from app.db.engine import transaction
from app.runtime import Runtime

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/login")
async def login_page(
    request: Request, next_path: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    if await console_user(request) is not None:
        return RedirectResponse(safe_next(next_path), status_code=303)
    return render(request, "login.html", {"next": safe_next(next_path)}, user=None)


@router.post("/login")
async def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=200)] = "",
    next_path: Annotated[str | None, Form(alias="next")] = None,
) -> Response:
    await require_csrf(request, None)
    target = safe_next(next_path)
    runtime: Runtime = request.app.state.runtime
    lifetime_s = runtime.settings.console_session_hours * 3600
    try:
        async with transaction(runtime.sessions) as session:
            signed_in = await sign_in(session, api_key=api_key.strip(), lifetime_s=lifetime_s)
    except AuthenticationFailed as failed:
        reason = str(failed.details.get("reason", failed.message))
        return render(
            request,
            "login.html",
            {"next": target, "error": f"Sign-in failed: {reason}."},
            user=None,
            status_code=401,
        )
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, signed_in.token, lifetime_s)
    return response


@router.post("/logout")
async def logout(request: Request, user: CsrfUserDep) -> Response:
    return await sign_out(request, user)
