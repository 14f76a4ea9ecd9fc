import asyncio

import pytest
from sqlalchemy import select

from app.accounts.models import Account
from app.accounts.service import create_account
from app.core.errors import InsufficientCredits, InvalidInput
from app.credits.models import LedgerEntry
from app.credits.service import (
    grant_credits,
    hold_credits,
    ledger_sum,
    list_ledger,
    refund_hold,
    settle_hold,
)
from app.runtime import Runtime


async def _new_account(runtime: Runtime, credits: int) -> str:
    async with runtime.sessions() as s:
        account = await create_account(s, name="a", credits=credits)
        await s.commit()
        return account.id


async def _balance_and_sum(runtime: Runtime, account_id: str) -> tuple[int, int]:
    async with runtime.sessions() as s:
        balance = await s.scalar(select(Account.balance).where(Account.id == account_id))
        return int(balance or 0), await ledger_sum(s, account_id=account_id)


async def test_hold_settle_refund_keep_balance_equal_to_ledger(runtime: Runtime) -> None:
    account_id = await _new_account(runtime, 100)
    async with runtime.sessions() as s:
        await hold_credits(s, account_id=account_id, amount=30, task_id="task_a")
        await hold_credits(s, account_id=account_id, amount=20, task_id="task_b")
        await settle_hold(s, task_id="task_a")
        refund = await refund_hold(s, task_id="task_b", note="provider_error")
        await s.commit()
    assert refund is not None and refund.amount == 20 and refund.balance_after == 70
    assert await _balance_and_sum(runtime, account_id) == (70, 70)
    async with runtime.sessions() as s:
        kinds = [e.kind for e in await list_ledger(s, account_id=account_id, limit=10)]
    assert kinds == ["refund", "settle", "hold", "hold", "grant"]


async def test_hold_beyond_balance_is_refused_and_changes_nothing(runtime: Runtime) -> None:
    account_id = await _new_account(runtime, 10)
    async with runtime.sessions() as s:
        with pytest.raises(InsufficientCredits) as caught:
            await hold_credits(s, account_id=account_id, amount=11, task_id="task_x")
        await s.commit()
    assert caught.value.message == "insufficient credits"
    assert caught.value.details == {"required": 11, "balance": 10}
    assert await _balance_and_sum(runtime, account_id) == (10, 10)


async def test_a_task_is_refunded_at_most_once(runtime: Runtime) -> None:
    account_id = await _new_account(runtime, 50)
    async with runtime.sessions() as s:
        await hold_credits(s, account_id=account_id, amount=50, task_id="task_once")
        await refund_hold(s, task_id="task_once")
        await s.commit()
    async with runtime.sessions() as s:
        with pytest.raises(Exception, match=r"(?i)unique"):
            await refund_hold(s, task_id="task_once")
        await s.rollback()
    assert await _balance_and_sum(runtime, account_id) == (50, 50)


async def test_settle_or_refund_without_a_hold_does_nothing(runtime: Runtime) -> None:
    async with runtime.sessions() as s:
        assert await settle_hold(s, task_id="task_none") is None
        assert await refund_hold(s, task_id="task_none") is None


@pytest.mark.parametrize("amount", [0, -5])
async def test_grant_must_be_positive(runtime: Runtime, amount: int) -> None:
    account_id = await _new_account(runtime, 0)
    async with runtime.sessions() as s:
        with pytest.raises(InvalidInput):
            await grant_credits(s, account_id=account_id, amount=amount)


async def test_concurrent_holds_never_overdraw(runtime: Runtime) -> None:
    """200 holds of 10 race for 500 credits: exactly 50 win, whatever the interleaving."""
    account_id = await _new_account(runtime, 500)

    async def one_hold(i: int) -> bool:
        async with runtime.sessions() as s:
            try:
                await hold_credits(s, account_id=account_id, amount=10, task_id=f"task_{i}")
                await s.commit()
                return True
            except InsufficientCredits:
                await s.rollback()
                return False

    results = await asyncio.gather(*(one_hold(i) for i in range(200)))
    assert sum(results) == 50
    assert await _balance_and_sum(runtime, account_id) == (0, 0)
    async with runtime.sessions() as s:
        holds = (
            (await s.execute(select(LedgerEntry).where(LedgerEntry.kind == "hold"))).scalars().all()
        )
    assert len(holds) == 50
