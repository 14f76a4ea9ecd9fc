"""The /v1 tasks surface (seed 004), reading side: task history, one task, one asset.

Every task of the calling key is here, whichever surface created it (jobs.createTask too).

| seed `status` | internal status |
|---|---|
| 0 pending    | queued     |
| 1 processing | generating |
| 2 completed  | success    |
| 3 failed     | fail       |

`total` of a page counts the matching tasks up to TOTAL_EXACT_LIMIT only (one index range
read, see the v1_tasks migration); past it the page says `totalIsEstimate` (see TaskPage).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.errors import InvalidInput, NotFound
from app.core.ids import now_ms
from app.jobs.failures import fail_code
from app.jobs.models import Task, TaskStatus
from app.jobs.views import get_task
from app.keys.scopes import Scope
from app.keys.service import Principal
from app.limits.service import GROUP_QUERY
from app.media.models import KIND_RESULT, MediaFile
from app.media.service import list_tasks_media, media_url
from app.runtime import Runtime
from app.tasks.schemas import AssetRead, TaskItem, TaskPage, TaskResponse

STATUS_CODES: dict[str, int] = {
    TaskStatus.QUEUED.value: 0,
    TaskStatus.GENERATING.value: 1,
    TaskStatus.SUCCESS.value: 2,
    TaskStatus.FAIL.value: 3,
}
_STATUS_OF_CODE = {code: status for status, code in STATUS_CODES.items()}
PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX = 20, 100
# Deeper than any history we keep; bounds the offset a request can make the database skip.
PAGE_MAX = 1_000_000
# Counting more than this many tasks of one filter would read too much of a long history.
TOTAL_EXACT_LIMIT = 10_000
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DAY_MS = 86_400_000


async def list_tasks(
    session: AsyncSession,
    *,
    runtime: Runtime,
    principal: Principal,
    model: str | None = None,
    status: int | None = None,
    start: str | None = None,
    end: str | None = None,
    page: int = 1,
    page_size: int = PAGE_SIZE_DEFAULT,
) -> TaskPage:
    """A page of the calling key's tasks, newest first.

    Raises PermissionDenied, RateLimited, InvalidInput (naming the field).
    """
    principal.require(Scope.TASKS_READ)
    await runtime.limiter.hit(principal, GROUP_QUERY)
    filters = _filters(principal, model=model, status=status, start=start, end=end)
    if not 1 <= page <= PAGE_MAX:
        raise InvalidInput(f"page must be an integer from 1 to {PAGE_MAX}", field="page")
    if not 1 <= page_size <= PAGE_SIZE_MAX:
        raise InvalidInput(
            f"pageSize must be an integer from 1 to {PAGE_SIZE_MAX}", field="pageSize"
        )
    offset = (page - 1) * page_size
    # The page's ids first, from the index alone, then only those rows: a deep page skips
    # index entries, not table rows.
    ids = (
        select(col(Task.id), col(Task.created_at))
        .where(*filters)
        .order_by(col(Task.created_at).desc(), col(Task.id).desc())
        .offset(offset)
        .limit(page_size)
        .subquery()
    )
    stmt = (
        select(Task)
        .join(ids, col(Task.id) == ids.c.id)
        .order_by(ids.c.created_at.desc(), ids.c.id.desc())
    )
    tasks = list((await session.scalars(stmt)).all())
    total, estimate = await _total(
        session, filters, offset=offset, shown=len(tasks), size=page_size
    )
    assets = await _asset_ids(session, [t.id for t in tasks])
    return TaskPage(
        total=total,
        page=page,
        page_size=page_size,
        tasks=[task_item(t, assets.get(t.id, [])) for t in tasks],
        total_is_estimate=estimate,
    )


async def read_task(
    session: AsyncSession, *, runtime: Runtime, principal: Principal, task_id: str
) -> TaskItem:
    """One task of the calling key in the list's shape.

    Raises PermissionDenied, RateLimited, NotFound (another key's task too).
    """
    principal.require(Scope.TASKS_READ)
    await runtime.limiter.hit(principal, GROUP_QUERY)
    task = await get_task(session, principal=principal, task_id=task_id)
    assets = await _asset_ids(session, [task.id])
    return task_item(task, assets.get(task.id, []))


async def read_asset(
    session: AsyncSession, *, runtime: Runtime, principal: Principal, asset_id: str, base_url: str
) -> AssetRead:
    """A result file of one of the calling key's tasks, with a freshly signed URL.

    Raises PermissionDenied, RateLimited, NotFound (an upload, or another key's asset).
    """
    principal.require(Scope.TASKS_READ)
    await runtime.limiter.hit(principal, GROUP_QUERY)
    row = (
        await session.execute(
            select(MediaFile)
            .join(Task, col(Task.id) == col(MediaFile.task_id))
            .where(
                col(MediaFile.id) == asset_id,
                col(MediaFile.kind) == KIND_RESULT,
                col(Task.api_key_id) == principal.key_id,
            )
        )
    ).scalar_one_or_none()
    if row is None or row.task_id is None:
        raise NotFound("asset not found")
    settings = runtime.settings
    url = media_url(
        row,
        base_url=base_url,
        secret=runtime.signing_secret,
        ttl_s=settings.media_url_ttl_seconds,
        now_s=now_ms() // 1000,
    )
    return AssetRead(
        id=row.id,
        task_id=row.task_id,
        index=row.position + 1,
        url=url,
        content_type=row.content_type,
        width=row.width,
        height=row.height,
        duration=None if row.duration_ms is None else row.duration_ms / 1000,
        bytes=row.size_bytes,
        sha256=row.sha256,
    )


def task_item(task: Task, asset_ids: list[str]) -> TaskItem:
    """A task in the seed's list shape."""
    failure = fail_code(task.fail_code) if task.fail_code else None
    return TaskItem(
        id=task.id,
        model=task.model,
        style=task.style or "",
        cost=0 if failure and failure.refunded else task.price,
        request=_request_of(task),
        response=TaskResponse(assets=asset_ids),
        status=STATUS_CODES[task.status],
        started_at=iso_utc(task.started_at),
        finished_at=iso_utc(task.completed_at),
        created_at=iso_utc(task.created_at) or "",
        updated_at=iso_utc(task.updated_at) or "",
        parent_task_id=task.parent_task_id,
        action=task.action,
        index=task.source_index,
    )


def iso_utc(epoch_ms: int | None) -> str | None:
    """Epoch milliseconds as the seed writes times: 2025-06-11T15:18:42Z."""
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _request_of(task: Task) -> dict[str, Any]:
    """The request as its caller wrote it; for jobs.createTask, the model and its inputs."""
    if task.request_json is not None:
        written: dict[str, Any] = json.loads(task.request_json)
        return written
    inputs: dict[str, Any] = json.loads(task.input_json)
    return {"model": task.model, **inputs}


def _filters(
    principal: Principal,
    *,
    model: str | None,
    status: int | None,
    start: str | None,
    end: str | None,
) -> list[ColumnElement[bool]]:
    filters = [col(Task.api_key_id) == principal.key_id]
    if model:
        filters.append(col(Task.model) == model)
    if status is not None:
        if status not in _STATUS_OF_CODE:
            raise InvalidInput(
                "status must be one of 0 (pending), 1 (processing), 2 (completed), 3 (failed)",
                field="status",
            )
        filters.append(col(Task.status) == _STATUS_OF_CODE[status])
    first, last = _day(start, "start"), _day(end, "end")
    if first is not None and last is not None and last < first:
        raise InvalidInput("end must not be before start", field="end")
    if first is not None:
        filters.append(col(Task.created_at) >= _epoch_ms(first))
    if last is not None:  # inclusive: up to the end of that day
        filters.append(col(Task.created_at) < _epoch_ms(last) + _DAY_MS)
    return filters


def _day(value: str | None, field: str) -> date | None:
    if value is None:
        return None
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field} must be a date as YYYY-MM-DD", field=field) from None


def _epoch_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


async def _total(
    session: AsyncSession,
    filters: list[ColumnElement[bool]],
    *,
    offset: int,
    shown: int,
    size: int,
) -> tuple[int, bool]:
    """(total, whether it is a lower bound). A short, non-empty page ends the list, so its
    total is known without counting."""
    if shown and shown < size:
        return offset + shown, False
    if shown and offset + shown > TOTAL_EXACT_LIMIT:
        # This page alone proves more than the cap: counting could not say more.
        return offset + shown, True
    if not shown and offset == 0:
        return 0, False
    capped = select(col(Task.id)).where(*filters).limit(TOTAL_EXACT_LIMIT + 1).subquery()
    counted = int(await session.scalar(select(func.count()).select_from(capped)) or 0)
    if counted <= TOTAL_EXACT_LIMIT:
        return counted, False
    # A page with tasks on it proves at least offset + shown; an empty one proves nothing.
    return max(counted, offset + shown if shown else 0), True


async def _asset_ids(session: AsyncSession, task_ids: list[str]) -> dict[str, list[str]]:
    """Each task's result file ids in result order, in one query for the whole page."""
    files = await list_tasks_media(session, task_ids=task_ids)
    return {task_id: [f.id for f in found] for task_id, found in files.items()}
