"""Jobs, the reading side: one task (recordInfo) and its result files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.callbacks.models import CallbackDelivery
from app.core.errors import (
    InvalidInput,
    NotFound,
)
from app.core.ids import now_ms
from app.db.driver import statements
from app.db.engine import Reader
from app.jobs.failures import fail_code
from app.jobs.models import ACTIVE_STATUSES, Task, TaskStatus, public_state
from app.jobs.schemas import CallbackState, TaskRead
from app.jobs.viewcache import CachedView
from app.keys.scopes import Scope
from app.keys.service import Principal
from app.limits.service import GROUP_QUERY
from app.media.service import list_task_media, media_url
from app.runtime import Runtime

# queuePosition counts at most this far: beyond it the exact place costs a scan of the backlog
# and tells a client nothing more useful ("far back").
QUEUE_POSITION_CAP = 1000
_TASKS = Task.metadata.tables["task"]


async def get_task(session: AsyncSession, *, principal: Principal, task_id: str | None) -> Task:
    """A task of the calling key. Raises InvalidInput, NotFound."""
    if not task_id:
        raise InvalidInput("taskId is required", field="taskId")
    task = await session.get(Task, task_id)
    if task is None or task.api_key_id != principal.key_id:
        raise NotFound("task not found")
    return task


async def read_task_json(
    *,
    runtime: Runtime,
    principal: Principal,
    task_id: str | None,
    base_url: str,
) -> CachedView:
    """recordInfo serialised, with its ETag: from memory while the task has not changed since
    this process last read it (see app.jobs.viewcache), else read (in a transaction of its
    own) and kept. Raises RateLimited, InvalidInput, NotFound."""
    task_id = await _admit_read(runtime, principal, task_id)
    cache = runtime.task_views
    kept = cache.get(task_id, principal.key_id)
    if kept is not None:
        return kept
    since = cache.begin()
    async with statements(runtime.engine, runtime.driver) as conn:
        view = await _read_task(
            conn, runtime=runtime, principal=principal, task_id=task_id, base_url=base_url
        )
    body = view.model_dump_json(by_alias=True).encode()
    answer = CachedView.of(principal.key_id, body, ttl_s=cache.ttl_s, queued=view.stage == "queued")
    cache.put(task_id, answer, since=since)
    return answer


async def read_task(
    session: AsyncSession,
    *,
    runtime: Runtime,
    principal: Principal,
    task_id: str | None,
    base_url: str,
) -> TaskRead:
    """recordInfo: the task with fresh result URLs. Raises RateLimited, InvalidInput, NotFound."""
    task_id = await _admit_read(runtime, principal, task_id)
    return await _read_task(
        session, runtime=runtime, principal=principal, task_id=task_id, base_url=base_url
    )


async def _admit_read(runtime: Runtime, principal: Principal, task_id: str | None) -> str:
    """A recordInfo call's scope, rate limit and task id. Raises PermissionDenied,
    RateLimited, InvalidInput."""
    principal.require(Scope.TASKS_READ)
    await runtime.limiter.hit(principal, GROUP_QUERY)
    if not task_id:
        raise InvalidInput("taskId is required", field="taskId")
    return task_id


async def _read_task(
    db: Reader, *, runtime: Runtime, principal: Principal, task_id: str, base_url: str
) -> TaskRead:
    # One statement for the task of this key and its callback state; a queued task's place
    # comes from the process's board of the queue's head (see queue_place).
    row = (await db.execute(_READ_TASK, {"task_id": task_id, "key_id": principal.key_id})).first()
    if row is None:
        raise NotFound("task not found")
    # A detached picture of the row; model_construct skips validation.
    task = Task.model_construct(**dict(zip(_TASK_COLUMNS, row, strict=False)))
    callback = row[-1]
    position = await queue_place(db, runtime, task) if task.status == "queued" else None
    return await _view(
        db,
        runtime=runtime,
        task=task,
        base_url=base_url,
        position=position,
        callback=callback_state_of(task, callback),
    )


async def describe_task(
    session: AsyncSession,
    *,
    runtime: Runtime,
    task: Task,
    base_url: str,
    url_ttl_s: int | None = None,
) -> TaskRead:
    """The public view of a task (recordInfo data, callback body)."""
    position = await queue_place(session, runtime, task) if task.status == "queued" else None
    latest = None
    if task.callback_url:
        latest = await session.scalar(_LATEST_DELIVERY, {"task_id": task.id})
    return await _view(
        session,
        runtime=runtime,
        task=task,
        base_url=base_url,
        position=position,
        callback=callback_state_of(task, latest),
        url_ttl_s=url_ttl_s,
    )


def callback_state_of(task: Task, latest_delivery: str | None) -> CallbackState:
    """`none` without a callback URL; else the state of the task's newest delivery (pending
    until the task finishes and its delivery succeeds or gives up)."""
    if not task.callback_url:
        return "none"
    if latest_delivery in ("delivered", "failed"):
        return latest_delivery  # type: ignore[return-value]
    return "pending"


async def _view(
    db: Reader,
    *,
    runtime: Runtime,
    task: Task,
    base_url: str,
    position: int | None,
    callback: CallbackState,
    url_ttl_s: int | None = None,
) -> TaskRead:
    waiting = task.status in ACTIVE_STATUSES
    result_json = None
    if task.status == TaskStatus.SUCCESS.value:
        files = await result_files(
            db, runtime=runtime, task=task, base_url=base_url, ttl_s=url_ttl_s
        )
        urls = [f.url for f in files]
        result_json = json.dumps({"resultUrls": urls}, separators=(",", ":"))
    failure = fail_code(task.fail_code) if task.fail_code else None
    return TaskRead(
        task_id=task.id,
        model=task.model,
        state=public_state(task.status),
        stage=task.status if waiting else None,
        progress=task.progress,
        # Ours while it waits here; the upstream's (when it reports one) while it holds it.
        queue_position=position if position is not None or not waiting else _upstream_place(task),
        param=_param_json(task),
        result_json=result_json,
        fail_code=task.fail_code,
        fail_msg=task.fail_msg,
        fail_retryable=failure.retryable if failure else None,
        credits=0 if failure and failure.refunded else task.price,
        cost_time=task.completed_at - task.created_at if task.completed_at else None,
        complete_time=task.completed_at,
        create_time=task.created_at,
        update_time=task.updated_at,
        callback_state=callback,
        parent_task_id=task.parent_task_id,
        action=task.action,
        index=task.source_index,
    )


@dataclass(frozen=True)
class ResultFile:
    url: str
    name: str
    content_type: str
    path: str
    size_bytes: int


async def result_files(
    db: Reader,
    *,
    runtime: Runtime,
    task: Task,
    base_url: str,
    ttl_s: int | None = None,
) -> list[ResultFile]:
    """A finished task's files, each with a freshly signed URL (valid `ttl_s`, by default
    the media URL setting)."""
    if task.status != TaskStatus.SUCCESS.value:
        return []
    ttl, now_s = ttl_s or runtime.settings.media_url_ttl_seconds, now_ms() // 1000
    return [
        ResultFile(
            url=media_url(
                f, base_url=base_url, secret=runtime.signing_secret, ttl_s=ttl, now_s=now_s
            ),
            name=f"{task.id}-{f.position + 1}.{f.path.rsplit('.', 1)[-1]}",
            content_type=f.content_type,
            path=f.path,
            size_bytes=f.size_bytes,
        )
        for f in await list_task_media(db, task_id=task.id)
    ]


def _param_json(task: Task) -> str:
    param: dict[str, Any] = {"model": task.model, "input": json.loads(task.input_json)}
    if task.callback_url:
        param["callBackUrl"] = task.callback_url
    return json.dumps(param, separators=(",", ":"))


def _queued_ahead(due_at: ColumnElement[int], task_id: ColumnElement[str]) -> ScalarSelect[int]:
    """How many queued tasks come before (due_at, task_id), counted up to the cap only: a
    deep backlog must not make every status read scan it."""
    ahead = _TASKS.alias("ahead")
    rows = (
        select(ahead.c.id)
        .where(
            ahead.c.status == TaskStatus.QUEUED.value,
            ahead.c.due_at <= due_at,  # bounds the index range; the OR does not
            or_(ahead.c.due_at < due_at, and_(ahead.c.due_at == due_at, ahead.c.id < task_id)),
        )
        .limit(QUEUE_POSITION_CAP - 1)
        .correlate(_TASKS)
        .subquery()
    )
    return select(func.count()).select_from(rows).scalar_subquery()


_DELIVERIES = CallbackDelivery.metadata.tables["callback_delivery"]


def _latest_delivery(task_id: ColumnElement[str]) -> Select[tuple[str]]:
    """The status of a task's newest delivery: what callbackState reports."""
    return (
        select(_DELIVERIES.c.status)
        .where(_DELIVERIES.c.task_id == task_id)
        .order_by(_DELIVERIES.c.created_at.desc(), _DELIVERIES.c.id.desc())
        .limit(1)
    )


_LATEST_DELIVERY = _latest_delivery(bindparam("task_id"))
_TASK_COLUMNS = tuple(column.name for column in _TASKS.c)
_READ_TASK = select(
    *_TASKS.c,
    case(
        (
            col(Task.callback_url).is_not(None),
            _latest_delivery(_TASKS.c.id).correlate(_TASKS).scalar_subquery(),
        ),
        else_=None,
    ),
).where(col(Task.id) == bindparam("task_id"), col(Task.api_key_id) == bindparam("key_id"))
_QUEUED_AHEAD = select(_queued_ahead(bindparam("due_at"), bindparam("task_id")))
_QUEUE_HEAD = (
    select(_TASKS.c.id, _TASKS.c.due_at)
    .where(_TASKS.c.status == TaskStatus.QUEUED.value)
    .order_by(_TASKS.c.due_at, _TASKS.c.id)
    .limit(QUEUE_POSITION_CAP - 1)
)


def _upstream_place(task: Task) -> int | None:
    """The upstream's queue place (stored 0 = next) counted as ours is: 1 = next."""
    return None if task.queue_position is None else task.queue_position + 1


async def queue_place(db: Reader, runtime: Runtime, task: Task) -> int:
    """A queued task's place: 1 for the next task to be picked up; saturates at
    QUEUE_POSITION_CAP. From the process's board of the queue's head while nothing has left
    the queue since it was read (one read of the head serves every place until then), else
    counted for this task alone."""
    cache = runtime.task_views
    board = cache.queue_board()
    if board is None and cache.claim_board_read():
        since = cache.begin()
        try:
            heads = (await db.execute(_QUEUE_HEAD)).all()
        finally:
            cache.release_board_read()
        board = cache.keep_board(
            [(due_at, task_id) for task_id, due_at in heads], since=since, cap=QUEUE_POSITION_CAP
        )
    place = board.place(task.id, task.due_at) if board is not None else None
    if place is None:
        ahead = await db.scalar(_QUEUED_AHEAD, {"due_at": task.due_at, "task_id": task.id})
        place = int(ahead or 0) + 1
    return place


def base_url_of(runtime: Runtime, request_base: str | None) -> str:
    """Where clients reach us: the configured public URL, else the request's own base."""
    base = runtime.settings.public_url or request_base
    if not base:
        base = f"http://{runtime.settings.host}:{runtime.settings.port}"
    return base.rstrip("/")
