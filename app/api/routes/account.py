from typing import Annotated

from fastapi import APIRouter, Query

from app.accounts.schemas import AccountRead
from app.accounts.service import describe_account
from app.api.deps import PrincipalDep, RuntimeDep, SessionDep
from app.api.envelope import Envelope, error_responses, ok
from app.callbacks.schemas import WebhookSecretRead
from app.callbacks.service import read_webhook_secret, roll_secret
from app.credits.schemas import LedgerEntryRead, LedgerPage
from app.credits.service import list_ledger
from app.db.types import BIGINT_MAX

router = APIRouter(prefix="/api/v1/account", tags=["account"], responses=error_responses(401))


@router.get("", summary="The calling key's account: balance, tier and limits")
async def read_account(
    session: SessionDep, principal: PrincipalDep, runtime: RuntimeDep
) -> Envelope[AccountRead]:
    return ok(await describe_account(session, settings=runtime.settings, principal=principal))


@router.get("/ledger", summary="Credit movements, newest first", responses=error_responses(400))
async def read_ledger(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        int | None, Query(ge=1, le=BIGINT_MAX, description="nextCursor of the previous page")
    ] = None,
) -> Envelope[LedgerPage]:
    rows = await list_ledger(
        session, account_id=principal.account_id, limit=limit + 1, before_id=cursor
    )
    page = rows[:limit]
    has_more = len(rows) > limit
    return ok(
        LedgerPage(
            items=[
                LedgerEntryRead(
                    id=e.id or 0,
                    kind=e.kind,
                    amount=e.amount,
                    balance_after=e.balance_after,
                    task_id=e.task_id,
                    note=e.note,
                    create_time=e.created_at,
                )
                for e in page
            ],
            has_more=has_more,
            next_cursor=page[-1].id if has_more and page else None,
        )
    )


@router.get(
    "/webhook-secret",
    summary="The secret callbacks are signed with (Standard Webhooks)",
    responses=error_responses(403),
)
async def read_secret(session: SessionDep, principal: PrincipalDep) -> Envelope[WebhookSecretRead]:
    return ok(await read_webhook_secret(session, principal=principal))


@router.post(
    "/webhook-secret/roll",
    summary="Make a new signing secret; the old one keeps signing for 24 hours",
    responses=error_responses(403),
)
async def roll_webhook_secret(
    session: SessionDep, principal: PrincipalDep
) -> Envelope[WebhookSecretRead]:
    return ok(await roll_secret(session, principal=principal))
