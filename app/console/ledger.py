"""Ledger: the account's credit movements, newest first, a page at a time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.api.deps import SessionDep
from app.console.session import UserDep
from app.console.templating import render
from app.credits.service import list_ledger
from app.db.types import BIGINT_MAX

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE_SIZE = 50


@router.get("/ledger")
async def ledger_page(
    request: Request,
    user: UserDep,
    session: SessionDep,
    cursor: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None,
) -> Response:
    rows = await list_ledger(
        session, account_id=user.principal.account_id, limit=PAGE_SIZE + 1, before_id=cursor
    )
    page = rows[:PAGE_SIZE]
    next_cursor = page[-1].id if len(rows) > PAGE_SIZE and page else None
    return render(
        request,
        "ledger.html",
        {"entries": page, "next_cursor": next_cursor, "first_page": cursor is None},
        user=user,
    )
