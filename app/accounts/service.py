"""Accounts: who pays."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.accounts.schemas import AccountRead, TierLimitsRead
from app.core.config import Settings
from app.core.errors import InvalidInput, NotFound
from app.core.ids import new_id, now_ms
from app.credits.service import grant_credits
from app.keys.service import Principal


async def create_account(session: AsyncSession, *, name: str, credits: int = 0) -> Account:
    """Create an account, granting `credits` through the ledger. Raises InvalidInput."""
    if credits < 0:
        raise InvalidInput("credits cannot be negative", field="credits")
    account = Account(id=new_id("acct"), name=name, balance=0, created_at=now_ms())
    session.add(account)
    await session.flush()
    if credits:
        await grant_credits(session, account_id=account.id, amount=credits, note="initial grant")
        await session.refresh(account)
    return account


async def get_account(session: AsyncSession, *, account_id: str) -> Account:
    """Raises NotFound."""
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("account not found")
    return account


async def describe_account(
    session: AsyncSession, *, settings: Settings, principal: Principal
) -> AccountRead:
    """The calling key's account with its tier's limits. Raises NotFound."""
    account = await get_account(session, account_id=principal.account_id)
    limits = settings.tier_limits(principal.tier)
    return AccountRead(
        id=account.id,
        name=account.name,
        balance=account.balance,
        tier=principal.tier,
        limits=TierLimitsRead(**limits.model_dump()),
        create_time=account.created_at,
    )
