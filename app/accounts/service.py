"""Accounts: who pays."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.core.errors import InvalidInput, NotFound
from app.core.ids import new_id, now_ms
from app.credits.service import grant_credits


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
