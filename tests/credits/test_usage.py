"""Credits used per UTC day, from ledger rows written at chosen times, on both backends."""

from __future__ import annotations

from datetime import date

from app.accounts.service import create_account
from app.credits.models import LedgerEntry, LedgerKind
from app.credits.usage import DAY_MS, credits_used_per_day
from app.runtime import Runtime

# 2026-11-30 00:00:00 UTC, in ms.
NOV_30 = (date(2026, 11, 30) - date(1970, 1, 1)).days * DAY_MS


async def _account_with(runtime: Runtime, rows: list[tuple[LedgerKind, int, int]]) -> str:
    """An account whose ledger holds (kind, amount, created_at) rows."""
    async with runtime.sessions() as session:
        account = await create_account(session, name="usage", credits=0)
        for kind, amount, at in rows:
            session.add(
                LedgerEntry(
                    account_id=account.id,
                    kind=kind.value,
                    amount=amount,
                    balance_after=0,
                    created_at=at,
                )
            )
        await session.commit()
        return account.id


async def test_days_are_utc_days_of_holds_less_refunds(runtime: Runtime) -> None:
    now = NOV_30 + DAY_MS + 3_600_000  # Dec 1, 01:00
    account_id = await _account_with(
        runtime,
        [
            (LedgerKind.GRANT, 1000, NOV_30 - 5 * DAY_MS),  # a grant is not used
            (LedgerKind.HOLD, -30, NOV_30 - 1),  # Nov 29, 23:59:59.999
            (LedgerKind.HOLD, -10, NOV_30),  # Nov 30, 00:00
            (LedgerKind.HOLD, -5, NOV_30 + DAY_MS - 1),  # Nov 30, last ms
            (LedgerKind.SETTLE, 0, NOV_30 + 10),
            (LedgerKind.REFUND, 5, NOV_30 + DAY_MS),  # Dec 1: refunds Nov 30's second
            (LedgerKind.HOLD, -7, NOV_30 - 3 * DAY_MS),  # outside a 3-day window
        ],
    )
    other = await _account_with(runtime, [(LedgerKind.HOLD, -99, NOV_30)])
    async with runtime.sessions() as session:
        usage = await credits_used_per_day(session, account_id=account_id, days=3, now_ms=now)
        others = await credits_used_per_day(session, account_id=other, days=3, now_ms=now)
    assert [(u.day, u.held, u.refunded, u.used) for u in usage] == [
        (date(2026, 11, 29), 30, 0, 30),
        (date(2026, 11, 30), 15, 0, 15),
        (date(2026, 12, 1), 0, 5, -5),
    ]
    assert [u.used for u in others] == [0, 99, 0]


async def test_thirty_days_end_today_and_quiet_days_are_zero(runtime: Runtime) -> None:
    account_id = await _account_with(runtime, [])
    async with runtime.sessions() as session:
        usage = await credits_used_per_day(session, account_id=account_id, now_ms=NOV_30)
    assert len(usage) == 30
    assert usage[-1].day == date(2026, 11, 30) and usage[0].day == date(2026, 11, 1)
    assert all(u.used == 0 for u in usage)
