"""Credit movements. Every change of a balance writes a ledger row in the same transaction.

The balance is what an account can still spend: a hold subtracts at once (so no two
concurrent holds can both spend the last credits), a settle records that the hold became
a charge, a refund gives a hold back. The UPDATE carries its own `balance >= amount` guard
and the table a CHECK constraint, so the balance cannot go below zero under any concurrency.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    Insert,
    Select,
    String,
    bindparam,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.accounts.models import Account
from app.core import metrics
from app.core.errors import InsufficientCredits, InvalidInput, NotFound
from app.core.ids import now_ms
from app.credits.models import LedgerEntry, LedgerKind
from app.db.engine import Reader
from app.db.hooks import after_commit


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


_ACCOUNT = Account.metadata.tables["account"]
_LEDGER = LedgerEntry.metadata.tables["ledger_entry"]
# The hold's debit, with its own guard; built once (statements are compiled once and cached).
_DEBIT = (
    update(_ACCOUNT)
    .where(_ACCOUNT.c.id == bindparam("hold_account"), _ACCOUNT.c.balance >= bindparam("hold"))
    .values(balance=_ACCOUNT.c.balance - bindparam("hold"))
    .returning(_ACCOUNT.c.balance)
)


@dataclass(frozen=True)
class GuardedHold:
    """The ledger row of a hold, written only when a condition holds; see guarded_hold."""

    insert: Insert


_HOLD_COLUMNS = ["account_id", "kind", "amount", "balance_after", "task_id", "created_at"]


def _hold_row(balance_after: ColumnElement[int]) -> Select[Any]:
    """A hold's ledger row as a SELECT of its parameters (the hold_* names record_hold and
    hold_at_once give) and `balance_after`, in the order of _HOLD_COLUMNS."""
    return select(
        bindparam("hold_account", type_=String),
        bindparam("hold_kind", type_=String),
        bindparam("hold_amount", type_=BigInteger),
        balance_after,
        bindparam("hold_task", type_=String),
        bindparam("hold_at", type_=BigInteger),
    )


def _hold_params(account_id: str, amount: int, task_id: str) -> dict[str, Any]:
    """The parameters of _hold_row but its balance."""
    return {
        "hold_account": account_id,
        "hold_kind": LedgerKind.HOLD.value,
        "hold_amount": -amount,
        "hold_task": task_id,
        "hold_at": now_ms(),
    }


def guarded_hold(condition: ColumnElement[bool], *, with_cte: CTE | None = None) -> GuardedHold:
    """A hold whose ledger row is written only if `condition` holds. Build it once.

    The condition is evaluated after debit_for_hold locked the account row, in a statement
    of its own, so under READ COMMITTED it sees every transaction that held the lock before.
    `with_cte`: a data-modifying CTE (PostgreSQL) the same statement runs first, e.g. the
    insert of the task the hold is for; the condition does not see its row.
    """
    row = _hold_row(bindparam("hold_balance_after", type_=BigInteger)).where(condition)
    statement = insert(_LEDGER).from_select(_HOLD_COLUMNS, row).returning(_LEDGER.c.id)
    if with_cte is not None:
        statement = statement.add_cte(with_cte)
    return GuardedHold(statement)


def debit_and_hold(dependent: Callable[[CTE], CTE]) -> GuardedHold:
    """PostgreSQL: a hold in ONE statement, for a connection in autocommit (see
    app.db.driver.statements): the debit, a dependent insert and the hold's ledger row, all
    or none. `dependent(debited)` builds a data-modifying CTE that writes only when the debit
    did (it selects from `debited`), e.g. the task the hold is for. No condition can guard
    it: a count in this statement would read the snapshot taken before the account row's
    lock was granted. Build it once; run it with hold_at_once."""
    debited = _DEBIT.cte("debited")
    row = _hold_row(debited.c.balance).select_from(debited)
    statement = insert(_LEDGER).from_select(_HOLD_COLUMNS, row).returning(_LEDGER.c.balance_after)
    return GuardedHold(statement.add_cte(debited).add_cte(dependent(debited)))


async def hold_at_once(
    db: Reader,
    hold: GuardedHold,
    *,
    account_id: str,
    amount: int,
    task_id: str,
    params: Mapping[str, Any],
) -> int:
    """Run a debit_and_hold statement; the balance after. Raises InsufficientCredits,
    NotFound (and then nothing was written)."""
    written = await db.execute(
        hold.insert,
        {**params, **_hold_params(account_id, amount, task_id), "hold": amount},
    )
    balance_after: int | None = written.scalar()
    if balance_after is None:
        await _refuse_hold(db, account_id=account_id, amount=amount)
    return balance_after


async def debit_for_hold(session: AsyncSession, *, account_id: str, amount: int) -> int:
    """First half of a hold on the hot path: take `amount` off the balance, locking the
    account row until commit. Returns the balance after; record_hold must follow in the
    same transaction. Raises InsufficientCredits, NotFound."""
    balance_after: int | None = (
        await session.execute(_DEBIT, {"hold_account": account_id, "hold": amount})
    ).scalar_one_or_none()
    if balance_after is None:
        await _refuse_hold(session, account_id=account_id, amount=amount)
    return balance_after


async def undo_debit(session: AsyncSession, *, account_id: str, amount: int) -> None:
    """Give back a debit_for_hold that will get no ledger row (the create turned out a replay)."""
    await session.execute(_DEBIT, {"hold_account": account_id, "hold": -amount})


async def record_hold(
    session: AsyncSession,
    hold: GuardedHold,
    *,
    account_id: str,
    amount: int,
    balance_after: int,
    task_id: str,
    params: Mapping[str, Any],
) -> bool:
    """Second half: the hold's ledger row, written only if the hold's condition (with
    `params`) holds. On False the balance is debited without a ledger row: the caller must
    raise so that the transaction rolls back."""
    written = await session.execute(
        hold.insert,
        {
            **params,
            **_hold_params(account_id, amount, task_id),
            "hold_balance_after": balance_after,
        },
    )
    return written.scalar() is not None


_BALANCE = select(col(Account.balance)).where(col(Account.id) == bindparam("account_id"))


async def _refuse_hold(db: Reader, *, account_id: str, amount: int) -> NoReturn:
    balance = await db.scalar(_BALANCE, {"account_id": account_id})
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
    after_commit(session, lambda: metrics.CREDITS_SETTLED.inc(-hold.amount))
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
    after_commit(session, lambda: metrics.CREDITS_REFUNDED.inc(-hold.amount))
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


# A hold with no extra condition: its ledger row is always written.
UNCONDITIONAL_HOLD = guarded_hold(true())


async def hold_credits(session: AsyncSession, *, account_id: str, amount: int, task_id: str) -> int:
    """Reserve `amount` credits for a task; returns the balance after.

    The two halves create_task uses, with no extra condition. Raises InvalidInput,
    InsufficientCredits, NotFound.
    """
    if amount < 0:
        raise InvalidInput("a hold cannot be negative", field="amount")
    balance_after = await debit_for_hold(session, account_id=account_id, amount=amount)
    await record_hold(
        session,
        UNCONDITIONAL_HOLD,
        account_id=account_id,
        amount=amount,
        balance_after=balance_after,
        task_id=task_id,
        params={},
    )
    return balance_after
