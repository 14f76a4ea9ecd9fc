"""Channel rules the transports share: upstream callbacks, and the operator's views."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.ids import now_ms
from app.jobs.models import ACTIVE_STATUSES, Task
from app.jobs.viewcache import task_changed_after_commit

# Where the upstreams we speak put their job id in a callback body: ModelArk and Replicate
# `id`, fal `request_id`, a kie-style upstream `data.taskId`.
_ID_KEYS = ("id", "request_id", "taskId", "task_id")


def upstream_ids(body: bytes) -> list[str]:
    """The job ids an upstream callback body names (none when it is not JSON)."""
    try:
        document = json.loads(body)
    except ValueError:
        return []
    if not isinstance(document, dict):
        return []
    found: list[str] = []
    for scope in (document, document.get("data")):
        if isinstance(scope, dict):
            found += [v for k in _ID_KEYS if isinstance(v := scope.get(k), str) and v]
    return found[:8]


async def poll_now(session: AsyncSession, *, channel: str, ids: Iterable[str]) -> int:
    """Make the tasks `channel` holds under these upstream ids due for a poll at once.

    The callback only says "look now": the poll decides the outcome. A task a worker holds
    right now is left alone (that worker is already looking).
    """
    wanted = list(ids)
    if not wanted:
        return 0
    now = now_ms()
    stmt: Any = (
        update(Task)
        .where(
            col(Task.upstream_id).in_(wanted),
            col(Task.channel) == channel,
            col(Task.status).in_(ACTIVE_STATUSES),
            col(Task.lease_owner).is_(None),
        )
        .values(due_at=now, updated_at=now)
        .returning(col(Task.id))
    )
    polled = list((await session.execute(stmt)).scalars())
    task_changed_after_commit(session, *polled)
    return len(polled)
