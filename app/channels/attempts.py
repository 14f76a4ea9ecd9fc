"""The record of every call made to an upstream for a task: for the operator, never the caller.

Rows are written in the same transaction as the task's own change (a release, a settle), so
an attempt is on record exactly when its effect on the task is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.channels.config import Channel
from app.channels.models import TaskAttempt
from app.core.ids import now_ms

# The outcome of an attempt whose channel did not take the task: failover may go elsewhere.
REFUSED = "refused"


@dataclass(frozen=True)
class UpstreamCall:
    """One call to an upstream for a task: where it went, what kind, since when."""

    task_id: str
    channel: Channel
    kind: str  # submit | poll | cancel
    started_ms: int = field(default_factory=now_ms)

    def record(
        self,
        outcome: str,
        *,
        fail_code: str | None = None,
        upstream_id: str | None = None,
        message: str | None = None,
    ) -> TaskAttempt:
        """The row that says how the call went (latency: until now)."""
        return TaskAttempt(
            task_id=self.task_id,
            channel=self.channel.name,
            adapter=self.channel.adapter,
            kind=self.kind,
            outcome=outcome,
            fail_code=fail_code,
            upstream_id=upstream_id,
            message=message[:300] if message else None,
            latency_ms=max(0, now_ms() - self.started_ms),
            started_at=self.started_ms,
        )


async def refused_channels(session: AsyncSession, *, task_id: str) -> set[str]:
    """The channels that refused this task already (each is tried once per task)."""
    rows = await session.execute(
        select(col(TaskAttempt.channel)).where(
            col(TaskAttempt.task_id) == task_id, col(TaskAttempt.outcome) == REFUSED
        )
    )
    return set(rows.scalars())


async def list_attempts(session: AsyncSession, *, task_id: str) -> list[TaskAttempt]:
    rows = await session.execute(
        select(TaskAttempt).where(col(TaskAttempt.task_id) == task_id).order_by(col(TaskAttempt.id))
    )
    return list(rows.scalars())
