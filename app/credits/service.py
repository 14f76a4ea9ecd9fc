"""Credit movements. Every change of a balance writes a ledger row in the same transaction.

The balance is what an account can still spend: a hold subtracts at once (so no two
concurrent holds can both spend the last credits), a settle records that the hold became
a charge, a refund gives a hold back. The UPDATE carries its own `balance >= amount` guard
and the table a CHECK constraint, so the balance cannot go below zero under any concurrency.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.accounts.models import Account
from app.core.errors import InsufficientCredits, InvalidInput, NotFound
from app.core.ids import now_ms
from app.credits.models import LedgerEntry, LedgerKind


async def _move(
    session: AsyncSession,
    *,
    account_id: str,
    amount: int,
    kind: LedgerKind,
    task_id: str | None = None,
    note: str | None = None,
) -> LedgerEntry | None:
    """Add `amount` (may be negative) to the balance unless it would go below zero."""
    stmt = (
        update(Account)
        .where(col(Account.id) == account_id)
        .values(balance=col(Account.balance) + amount)
        .returning(col(Account.balance))
    )
    if amount < 0:
        stmt = stmt.where(col(Account.balance) >= -amount)
    balance_after = (await session.execute(stmt)).scalar_one_or_none()
    if balance_after is None:
        return None
    entry = LedgerEntry(
        account_id=account_id,
        kind=kind.value,
        amount=amount,
        balance_after=balance_after,
        task_id=task_id,
        note=note,
        created_at=now_ms(),
    )
    session.add(entry)
    await session.flush()
    return entry


async def grant_credits(
    session: AsyncSession, *, account_id: str, amount: int, note: str | None = None
) -> LedgerEntry:
    """Add credits to an account. Raises InvalidInput, NotFound."""
    if amount <= 0:
        raise InvalidInput("amount must be a positive number of credits", field="amount")
    entry = await _move(
        session, account_id=account_id, amount=amount, kind=LedgerKind.GRANT, note=note
    )
    if entry is None:
        raise NotFound("account not found")
    return entry


async def hold_credits(
    session: AsyncSession, *, account_id: str, amount: int, task_id: str
) -> LedgerEntry:
    """Reserve `amount` credits for a task. Raises InsufficientCredits, NotFound."""
    if amount < 0:
        raise InvalidInput("a hold cannot be negative", field="amount")
    entry = await _move(
        session, account_id=account_id, amount=-amount, kind=LedgerKind.HOLD, task_id=task_id
    )
    if entry is not None:
        return entry
    balance = await session.scalar(
        select(col(Account.balance)).where(col(Account.id) == account_id)
    )
    if balance is None:
        raise NotFound("account not found")
    raise InsufficientCredits(required=amount, balance=balance)


async def _hold_of(session: AsyncSession, task_id: str) -> LedgerEntry | None:
    stmt = select(LedgerEntry).where(
        col(LedgerEntry.task_id) == task_id,
        col(LedgerEntry.kind) == LedgerKind.HOLD.value,
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def settle_hold(session: AsyncSession, *, task_id: str) -> LedgerEntry | None:
    """Turn a task's hold into a charge; returns None when the task held nothing."""
    hold = await _hold_of(session, task_id)
    if hold is None:
        return None
    return await _move(
        session, account_id=hold.account_id, amount=0, kind=LedgerKind.SETTLE, task_id=task_id
    )


async def refund_hold(
    session: AsyncSession, *, task_id: str, note: str | None = None
) -> LedgerEntry | None:
    """Give a task's held credits back; returns None when the task held nothing."""
    hold = await _hold_of(session, task_id)
    if hold is None:
        return None
    return await _move(
        session,
        account_id=hold.account_id,
        amount=-hold.amount,
        kind=LedgerKind.REFUND,
        task_id=task_id,
        note=note,
    )


async def list_ledger(
    session: AsyncSession, *, account_id: str, limit: int, before_id: int | None = None
) -> list[LedgerEntry]:
    """Newest first; `before_id` is the cursor of the next page."""
    stmt = select(LedgerEntry).where(col(LedgerEntry.account_id) == account_id)
    if before_id is not None:
        stmt = stmt.where(col(LedgerEntry.id) < before_id)
    stmt = stmt.order_by(col(LedgerEntry.id).desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def ledger_sum(session: AsyncSession, *, account_id: str) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(col(LedgerEntry.amount)), 0)).where(
            col(LedgerEntry.account_id) == account_id
        )
    )
    return int(total or 0)
