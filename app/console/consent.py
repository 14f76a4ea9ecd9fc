"""The OAuth consent page: a signed-in user lets an MCP client act for their key.

`/authorize` (app.oauth.routes) keeps the client's request and sends the browser here;
approving answers the client's redirect URI with a code, denying with access_denied.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.console.session import CsrfUserDep, UserDep
from app.console.templating import render
from app.core.errors import InvalidInput
from app.db.engine import transaction
from app.oauth.service import (
    approve_authorization,
    deny_authorization,
    grantable_scopes,
    pending_authorization,
)
from app.runtime import Runtime

router = APIRouter(prefix="/console", include_in_schema=False)
RequestId = Annotated[str, Query(alias="request", min_length=1, max_length=100)]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _page(
    request: Request, user: UserDep, request_id: str, *, error: str | None, status_code: int
) -> Response:
    async with transaction(_runtime(request).sessions) as session:
        pending = await pending_authorization(session, request_id=request_id)
    offered = grantable_scopes(user.principal)
    wanted = pending.requested_scopes
    return render(
        request,
        "consent.html",
        {
            "pending": pending,
            "request_id": request_id,
            "offered": offered,
            "checked": [s for s in offered if wanted is None or s in wanted],
            "error": error,
        },
        user=user,
        status_code=status_code,
    )


@router.get("/oauth/consent")
async def consent_page(request: Request, user: UserDep, request_id: RequestId) -> Response:
    return await _page(request, user, request_id, error=None, status_code=200)


@router.post("/oauth/consent")
async def decide(
    request: Request,
    user: CsrfUserDep,
    request_id: Annotated[str, Form(alias="request", min_length=1, max_length=100)],
    decision: Annotated[str, Form(pattern="^(approve|deny)$")],
    scope: Annotated[list[str] | None, Form(max_length=10)] = None,
) -> Response:
    try:
        async with transaction(_runtime(request).sessions) as session:
            if decision == "approve":
                target = await approve_authorization(
                    session, request_id=request_id, principal=user.principal, scopes=scope or []
                )
            else:
                target = await deny_authorization(session, request_id=request_id)
    except InvalidInput as exc:
        return await _page(request, user, request_id, error=exc.message, status_code=400)
    return RedirectResponse(target, status_code=303)
