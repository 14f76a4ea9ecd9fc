"""Credits used per day, from the ledger: what a person reads on the console's overview."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.ids import now_ms as current_ms
from app.credits.models import LedgerEntry, LedgerKind
from app.credits.schemas import DailyUsage

DAY_MS = 86_400_000
MAX_USAGE_DAYS = 366


async def credits_used_per_day(
    session: AsyncSession, *, account_id: str, days: int = 30, now_ms: int | None = None
) -> list[DailyUsage]:
    """One row per UTC day, oldest first, the last of them today; days without movements
    are zero. Used = credits held by tasks created that day minus credits refunded that day
    (a settle moves no credits: the hold was the charge). Raises nothing."""
    days = max(1, min(days, MAX_USAGE_DAYS))
    today = (now_ms if now_ms is not None else current_ms()) // DAY_MS
    first = today - days + 1
    # Integer division of epoch milliseconds is the UTC day on SQLite and PostgreSQL alike;
    # a literal (not a bound parameter) keeps SELECT and GROUP BY the same expression.
    day = col(LedgerEntry.created_at) // literal_column(str(DAY_MS))
    amount, kind = col(LedgerEntry.amount), col(LedgerEntry.kind)
    rows = await session.execute(
        select(
            day,
            func.sum(case((kind == LedgerKind.HOLD.value, -amount), else_=0)),
            func.sum(case((kind == LedgerKind.REFUND.value, amount), else_=0)),
        )
        .where(
            col(LedgerEntry.account_id) == account_id,
            kind.in_([LedgerKind.HOLD.value, LedgerKind.REFUND.value]),
            col(LedgerEntry.created_at) >= first * DAY_MS,
        )
        .group_by(day)
    )
    by_day = {int(d): (int(held or 0), int(refunded or 0)) for d, held, refunded in rows}
    epoch = datetime(1970, 1, 1, tzinfo=UTC).date()
    usage = []
    for number in range(first, today + 1):
        held, refunded = by_day.get(number, (0, 0))
        usage.append(
            DailyUsage(
                day=epoch + timedelta(days=number),
                held=held,
                refunded=refunded,
                used=held - refunded,
            )
        )
    return usage
