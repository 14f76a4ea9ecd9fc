"""Overview: balance, tier and its limits, credits used per day."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.accounts.service import describe_account
from app.api.deps import RuntimeDep, SessionDep
from app.console.session import UserDep
from app.console.templating import render

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("")
async def overview(
    request: Request, user: UserDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    account = await describe_account(session, settings=runtime.settings, principal=user.principal)
    return render(request, "overview.html", {"account": account}, user=user)
