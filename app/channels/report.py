"""What the operator sees of channels: their health, a task's attempts, usage and margin.

Health is read from the attempt records, so every process (a CLI, another host) sees the
same answer; a worker's own breaker (app.channels.breaker) decides routing in-process from
the same outcomes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.channels.breaker import BreakerState, counts_against_channel
from app.channels.config import Channel
from app.channels.models import TaskAttempt
from app.jobs.failures import fail_code
from app.jobs.models import ACTIVE_STATUSES, Task, TaskStatus

# Outcomes that are the channel's failure (besides failures by a code that counts).
_UNHEALTHY = frozenset({"refused", "ambiguous", "unavailable"})
# How far back the health of a channel looks.
HEALTH_WINDOW = 200


@dataclass(frozen=True)
class ChannelStatus:
    channel: Channel
    breaker: BreakerState
    consecutive_failures: int
    attempts: int
    failures: int
    last_success_at: int | None
    last_failure_at: int | None
    last_failure: str | None


def _failed(attempt: TaskAttempt) -> bool:
    if attempt.outcome in _UNHEALTHY:
        return True
    return attempt.outcome == "failed" and counts_against_channel(attempt.fail_code or "")


async def channel_health(
    session: AsyncSession,
    channels: list[Channel],
    *,
    breaker_failures: int,
    breaker_cooldown_ms: int,
    now: int,
) -> list[ChannelStatus]:
    """Each channel's recent record: its last HEALTH_WINDOW attempts, newest first."""
    statuses = []
    for channel in channels:
        rows = await session.execute(
            select(TaskAttempt)
            .where(col(TaskAttempt.channel) == channel.name)
            .order_by(col(TaskAttempt.id).desc())
            .limit(HEALTH_WINDOW)
        )
        recent = list(rows.scalars())
        failed = [a for a in recent if _failed(a)]
        fine = [a for a in recent if not _failed(a)]
        streak = 0
        for attempt in recent:
            if not _failed(attempt):
                break
            streak += 1
        breaker: BreakerState = "closed"
        if streak >= breaker_failures:
            opened = recent[0].started_at + recent[0].latency_ms
            breaker = "open" if now - opened < breaker_cooldown_ms else "half_open"
        statuses.append(
            ChannelStatus(
                channel=channel,
                breaker=breaker,
                consecutive_failures=streak,
                attempts=len(recent),
                failures=len(failed),
                last_success_at=fine[0].started_at if fine else None,
                last_failure_at=failed[0].started_at if failed else None,
                last_failure=(failed[0].message or failed[0].fail_code) if failed else None,
            )
        )
    return statuses


@dataclass
class UsageRow:
    model: str
    channel: str
    tasks: int = 0
    succeeded: int = 0
    failed: int = 0
    active: int = 0
    credits_charged: int = 0
    # unit -> counter -> total, e.g. {"tokens": {"total_tokens": 5120}}
    upstream_cost: dict[str, dict[str, float]] = field(default_factory=dict)


async def usage_report(session: AsyncSession, *, since: int) -> list[UsageRow]:
    """Per model and channel since `since` (ms): tasks, failures, credits charged (refunded
    failures charge nothing) and the upstream's reported cost, summed per unit."""
    rows = await session.execute(
        select(
            col(Task.model),
            col(Task.channel),
            col(Task.status),
            col(Task.fail_code),
            col(Task.price),
            col(Task.upstream_cost),
        ).where(col(Task.created_at) >= since)
    )
    table: dict[tuple[str, str], UsageRow] = {}
    for model, channel, status, code, price, cost in rows:
        key = (model, channel or "-")
        row = table.get(key) or table.setdefault(key, UsageRow(model, key[1]))
        row.tasks += 1
        if status in ACTIVE_STATUSES:
            row.active += 1
        elif status == TaskStatus.SUCCESS.value:
            row.succeeded += 1
            row.credits_charged += price
        else:
            row.failed += 1
            if not fail_code(code or "provider_error").refunded:
                row.credits_charged += price
        _add_cost(row.upstream_cost, cost)
    return sorted(table.values(), key=lambda r: (r.model, r.channel))


def _add_cost(totals: dict[str, dict[str, float]], cost: str | None) -> None:
    if not cost:
        return
    try:
        reported: Any = json.loads(cost)
    except ValueError:
        return
    if not isinstance(reported, dict):
        return
    unit = str(reported.get("unit") or "units")
    counters = totals.setdefault(unit, {})
    for name, value in reported.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            counters[name] = counters.get(name, 0) + value
