"""Overview: balance, tier and its limits, credits used per day for the last 30 days."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.accounts.service import describe_account
from app.api.deps import RuntimeDep, SessionDep
from app.console.session import UserDep
from app.console.templating import render
from app.credits.schemas import DailyUsage
from app.credits.usage import credits_used_per_day

router = APIRouter(prefix="/console", include_in_schema=False)
USAGE_DAYS = 30
# The chart's drawing area, in SVG units (it scales to the page's width).
CHART_WIDTH, CHART_HEIGHT, CHART_TOP = 600, 160, 12


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    usage: DailyUsage
    label: bool  # whether the day is written under the bar


def chart_bars(usage: list[DailyUsage]) -> list[Bar]:
    """One bar per day, scaled to the busiest day; a day with refunds beyond its holds
    draws no bar (its numbers are in the bar's tooltip)."""
    peak = max((day.used for day in usage), default=0) or 1
    slot = CHART_WIDTH / max(len(usage), 1)
    bars = []
    for index, day in enumerate(usage):
        height = max(day.used, 0) / peak * (CHART_HEIGHT - CHART_TOP)
        bars.append(
            Bar(
                x=index * slot + slot * 0.15,
                y=CHART_HEIGHT - height,
                width=slot * 0.7,
                height=height,
                usage=day,
                label=(len(usage) - 1 - index) % 7 == 0,
            )
        )
    return bars


@router.get("")
async def overview(
    request: Request, user: UserDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    account = await describe_account(session, settings=runtime.settings, principal=user.principal)
    usage = await credits_used_per_day(
        session, account_id=user.principal.account_id, days=USAGE_DAYS
    )
    return render(
        request,
        "overview.html",
        {
            "account": account,
            "usage": usage,
            "used_total": sum(day.used for day in usage),
            "bars": chart_bars(usage),
            "peak": max(day.used for day in usage),
            "chart": {"width": CHART_WIDTH, "height": CHART_HEIGHT},
        },
        user=user,
    )
